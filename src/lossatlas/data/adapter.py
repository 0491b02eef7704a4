"""The data adapter: what every probe and trainer accepts as ``data``, read whole into memory.

``data`` may be an ``(X, y)`` pair of tensors, a ``DataLoader`` (or any iterable) of batches,
or a lossatlas :class:`~lossatlas.data.Dataset`. The adapter turns each of these into the
training data and the named splits to evaluate, read whole into memory: every member of a
population draws its own data order, which needs random access to all samples.
:func:`training_batches` reads any batch structure through :mod:`lossatlas.data.batches`
(dict batches, several inputs, a :class:`~lossatlas.data.batches.BatchAdapter`), for the
population trainers and the path fitters; :func:`training_data` gives ``(X, y)`` tensors, for
the dense Hessian and the studies' stages. The probes stream data through
:mod:`lossatlas.data.batches` instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lossatlas.data.batches import Batch, BatchAdapter, Batches

__all__ = ["Split", "train_tensors", "training_batches", "training_data"]

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


def training_batches(
    data: Any, adapter: BatchAdapter | None = None
) -> tuple[Batch, dict[str, Batch]]:
    """``(train, splits)``: the training data as one in-memory batch, and the splits to evaluate.

    The batch interface's counterpart of :func:`training_data`: ``data`` is anything
    :class:`~lossatlas.data.batches.Batches` reads (``(X, y)`` tensors, a ``DataLoader`` of
    ``(x, y)`` or of dict batches, a lossatlas ``Dataset``), read with ``adapter``; a streamed
    source is read once and concatenated. A ``Dataset`` gives its ``train``, ``test`` and (when
    not empty) ``val`` splits, anything else only ``train``. Raises
    :class:`~lossatlas.data.batches.BatchError` for data or batches the adapter cannot read.
    """
    names = ["train"]
    if _is_dataset(data):
        names += ["test"] + (["val"] if data.x_val.shape[0] > 0 else [])
    splits = {name: Batches(data, adapter, split=name).gather() for name in names}
    return splits["train"], splits


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
