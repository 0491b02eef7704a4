"""Checks shared by every loader: shapes, finite inputs, and labels that are class indices.

Each failure raises :class:`DataError` with one line naming the source and the array, so a
user can tell which file to fix without reading a traceback.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lossatlas.errors import DataError

__all__ = ["validate_arrays"]


def _example(values: np.ndarray) -> str:
    """The first offending value, formatted for a message."""
    value = values.flat[0]
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def _check_inputs(x: np.ndarray, name: str, where: str) -> None:
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: {name} has dtype {x.dtype}; expected numbers")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: {name} is complex; expected real numbers")
    if x.ndim < 2:
        raise DataError(
            f"{where}: {name} must be (samples, features...) with at least 2 dimensions, "
            f"got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{where}: {name} is empty (0 samples)")
    if np.issubdtype(x.dtype, np.floating):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(f"{where}: {name} contains NaN or inf ({bad} values)")


def _check_labels(y: np.ndarray, name: str, n: int, x_name: str, where: str) -> int:
    """Validate ``y`` (``(n,)`` class indices) and return its largest label (``-1`` if none)."""
    if y.ndim != 1:
        raise DataError(f"{where}: {name} must be 1-D (one label per sample), got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{where}: {x_name} has {n} samples but {name} has {len(y)} labels")
    if np.issubdtype(y.dtype, np.floating):
        fractional = y[~np.isfinite(y) | (y != np.round(y))]
        if fractional.size:
            raise DataError(
                f"{where}: {name} has non-integer labels (e.g. {_example(fractional)}); "
                "labels must be class indices 0, 1, 2, ..."
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{where}: {name} has dtype {y.dtype}; labels must be integer class indices"
        )
    negative = y[y < 0]
    if negative.size:
        raise DataError(f"{where}: {name} has negative labels (e.g. {_example(negative)})")
    return int(y.max()) if y.size else -1


def validate_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    source: str,
    num_classes: int | None = None,
) -> int:
    """Check a dataset's arrays and return its number of classes.

    Args:
        x_train, x_test: ``(N, *input_shape)`` real numbers, finite, same ``input_shape``.
        y_train, y_test: ``(N,)`` integer class labels (integral floats are accepted),
            non-negative and below ``num_classes``.
        source: named at the start of every error message (a dataset name or a file).
        num_classes: the number of classes; ``None`` infers ``max(label) + 1`` over both splits.

    Raises:
        DataError: one line naming ``source``, the array and the problem.
    """
    where = source or "dataset"
    try:
        arrays = {
            name: np.asarray(value)
            for name, value in (
                ("x_train", x_train),
                ("y_train", y_train),
                ("x_test", x_test),
                ("y_test", y_test),
            )
        }
    except (TypeError, ValueError) as exc:  # e.g. ragged nested lists
        raise DataError(f"{where}: arrays are not rectangular numbers ({exc})") from exc
    top = -1
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        _check_inputs(x, f"x_{split}", where)
        top = max(top, _check_labels(y, f"y_{split}", len(x), f"x_{split}", where))
    train_shape, test_shape = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train_shape != test_shape:
        raise DataError(
            f"{where}: x_train samples have shape {train_shape} but x_test samples have shape "
            f"{test_shape}"
        )
    if num_classes is None:
        return top + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise DataError(f"{where}: num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise DataError(f"{where}: num_classes must be at least 1, got {num_classes}")
    if top >= num_classes:
        split = "y_train" if int(arrays["y_train"].max()) == top else "y_test"
        raise DataError(
            f"{where}: {split} has label {top}, out of range for {num_classes} classes "
            f"(valid: 0..{num_classes - 1})"
        )
    return int(num_classes)
