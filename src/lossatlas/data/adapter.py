"""The data adapter: what every probe and trainer accepts as ``data``, as tensors.

``data`` may be an ``(X, y)`` pair of tensors, a ``DataLoader`` (or any iterable) of ``(x, y)``
batches, or a lossatlas :class:`~lossatlas.data.Dataset`. The adapter turns each of these into
the training tensors and the named splits to evaluate (read whole into memory), for the
population trainers and path fitting. The probes read data through the batch interface of
:mod:`lossatlas.data.batches` instead, which streams loaders and reads any batch structure.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["Split", "train_tensors", "training_data"]

Split = tuple[Tensor, Tensor]
"""``(X (N, *input), y (N,))``."""


def training_data(data: Any) -> tuple[Tensor, Tensor, dict[str, Split]]:
    """``(X_train, y_train, splits)``: the training tensors and the named splits to evaluate.

    A :class:`~lossatlas.data.Dataset` gives its ``train``, ``test`` and (when not empty)
    ``val`` splits; an ``(X, y)`` pair or a ``DataLoader`` (read once into memory) gives only
    ``train``. Raises ``TypeError`` for anything else and ``ValueError`` when ``X`` and ``y``
    disagree on the number of samples.
    """
    if _is_dataset(data):
        splits = {"train": data.split("train"), "test": data.split("test")}
        if data.x_val.shape[0] > 0:
            splits["val"] = data.split("val")
        return data.x_train, data.y_train, splits
    if isinstance(data, torch.utils.data.DataLoader):
        xs, ys = zip(*[(xb, yb) for xb, yb in data], strict=True)
        data = (torch.cat(xs), torch.cat(ys))
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be an (X, y) pair of tensors, a DataLoader or a Dataset")
    x, y = (torch.as_tensor(t) for t in data)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X has {x.shape[0]} samples but y has {y.shape[0]}")
    return x, y, {"train": (x, y)}


def train_tensors(data: Any) -> Split:
    """The training split ``(X, y)`` of ``data`` (see :func:`training_data`); never empty.

    Of a :class:`~lossatlas.data.Dataset` only the train split is read.
    """
    x, y = data.split("train") if _is_dataset(data) else training_data(data)[:2]
    if x.shape[0] == 0:
        raise ValueError("data has no samples")
    return x, y


def _is_dataset(data: Any) -> bool:
    """A lossatlas :class:`~lossatlas.data.Dataset`, or anything shaped like one."""
    return hasattr(data, "x_train") and hasattr(data, "split")
