"""``load_dataset``: loader -> validation -> subsample -> val split -> standardise -> noise.

Every random choice comes from ``cfg.seed`` through :mod:`lossatlas.seeding` with its own
unit id, so one :class:`DataConfig` always yields identical tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lossatlas.config import DataConfig
from lossatlas.data.dataset import Dataset, RawData
from lossatlas.data.registry import get_loader
from lossatlas.data.transforms import apply_label_noise, fit_standardiser, standardise
from lossatlas.data.validate import validate_arrays
from lossatlas.errors import DataError
from lossatlas.seeding import make_generator, numpy_rng

__all__ = ["load_dataset", "split_indices"]


def split_indices(n_total: int, cfg: DataConfig, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` into the ``n_total`` train samples, each sorted.

    One permutation drawn from ``cfg.seed`` serves both steps: its first ``cfg.n_train``
    entries are the samples used at all (all of them when ``n_train`` is None), and the first
    ``round(val_fraction * n_used)`` of those (at least one when ``val_fraction > 0``) are the
    validation set. So ``n_train`` counts train + val.
    """
    n_used = n_total if cfg.n_train is None else cfg.n_train
    if n_used > n_total:
        raise DataError(
            f"{source}: data.n_train={cfg.n_train} exceeds the {n_total} train samples available"
        )
    n_val = math.floor(cfg.val_fraction * n_used + 0.5)
    if cfg.val_fraction > 0:
        n_val = max(n_val, 1)  # the user asked for a validation set: never silently drop it
    if n_used - n_val < 1:
        raise DataError(
            f"{source}: too few samples for the split: {n_used} train samples with "
            f"data.val_fraction={cfg.val_fraction} leave none to train on"
        )
    used = numpy_rng(cfg.seed, "data", "train_split").permutation(n_total)[:n_used]
    return np.sort(used[n_val:]), np.sort(used[:n_val])


def _test_indices(n_total: int, cfg: DataConfig, source: str) -> np.ndarray:
    """The first ``cfg.n_test`` of a seeded permutation, sorted (all samples when None)."""
    if cfg.n_test is None:
        return np.arange(n_total)
    if cfg.n_test > n_total:
        raise DataError(
            f"{source}: data.n_test={cfg.n_test} exceeds the {n_total} test samples available"
        )
    return np.sort(numpy_rng(cfg.seed, "data", "test_subset").permutation(n_total)[: cfg.n_test])


def _as_array(value: object, name: str, source: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:  # e.g. ragged nested lists from a custom loader
        raise DataError(f"{source}: {name} is not a rectangular array ({exc})") from exc


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load, validate and preprocess the dataset that ``cfg`` describes.

    Steps, in order:

    1. the registered loader reads the raw arrays (images scaled to [0, 1]);
    2. :func:`validate_arrays` checks shapes, finiteness and labels;
    3. ``n_train`` / ``n_test`` keep the first n samples of a seeded shuffle (order kept);
    4. ``val_fraction`` of the kept train samples become the validation split;
    5. inputs are standardised with the *train* split's mean/std — per channel for images,
       per feature otherwise — and the same transform is applied to val and test;
    6. label noise (probability ``label_noise``) resamples train labels only, after the val
       split, so validation and test labels stay clean.

    Raises:
        DataError: unknown name, missing/corrupt files, bad arrays or too few samples.
    """
    loader = get_loader(cfg.name)
    raw = loader(cfg)
    if not isinstance(raw, RawData):
        raise TypeError(
            f"loader for dataset '{cfg.name}' returned {type(raw).__name__}, expected RawData"
        )
    source = raw.source or cfg.name
    x_all = _as_array(raw.x_train, "x_train", source)
    y_all = _as_array(raw.y_train, "y_train", source)
    x_test = _as_array(raw.x_test, "x_test", source)
    y_test = _as_array(raw.y_test, "y_test", source)
    num_classes = validate_arrays(
        x_all, y_all, x_test, y_test, source=source, num_classes=raw.num_classes
    )
    is_image = x_all.ndim == 4 if raw.is_image is None else bool(raw.is_image)
    if is_image and x_all.ndim != 4:
        raise DataError(f"{source}: images must be (N, C, H, W), got x_train shape {x_all.shape}")

    train_idx, val_idx = split_indices(len(x_all), cfg, source)
    test_idx = _test_indices(len(x_test), cfg, source)
    x_train, x_val, x_test = x_all[train_idx], x_all[val_idx], x_test[test_idx]
    y_train, y_val, y_test = y_all[train_idx], y_all[val_idx], y_test[test_idx]

    mean, std = fit_standardiser(x_train, per_channel=is_image)
    # Fancy indexing above made fresh copies, so standardising may overwrite them.
    x_train, x_val, x_test = (
        standardise(x, mean, std, copy=False) for x in (x_train, x_val, x_test)
    )

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))  # integral floats were validated

    y_clean = labels(y_train)
    noisy_y, noisy_mask = apply_label_noise(
        y_clean, cfg.label_noise, num_classes, make_generator(cfg.seed, "data", "label_noise")
    )
    return Dataset(
        name=cfg.name,
        x_train=torch.from_numpy(x_train),
        y_train=noisy_y,
        x_val=torch.from_numpy(x_val),
        y_val=labels(y_val),
        x_test=torch.from_numpy(x_test),
        y_test=labels(y_test),
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in x_all.shape[1:]),
        is_image=is_image,
        noisy_mask=noisy_mask,
    )
