"""Datasets: a registry of loaders, one preprocessing pipeline, and image augmentation.

>>> from lossatlas.config import DataConfig
>>> ds = load_dataset(DataConfig(name="digits", val_fraction=0.1))
>>> ds.x_train.shape[1:], ds.num_classes
(torch.Size([64]), 10)

Built-in datasets: ``mnist1d`` (generated offline), ``digits`` (shipped with scikit-learn),
``npz`` (a user file), ``mnist`` / ``fashion_mnist`` (IDX files) and ``cifar10`` (binary or
python batches). Add more with :func:`register_dataset`.
"""

from __future__ import annotations

from lossatlas.data.adapter import Split, train_tensors, training_data
from lossatlas.data.dataset import Dataset, RawData
from lossatlas.data.pipeline import load_dataset
from lossatlas.data.registry import (
    Loader,
    available_datasets,
    register_dataset,
    unregister_dataset,
)
from lossatlas.data.transforms import augment_batch
from lossatlas.data.validate import validate_arrays

__all__ = [
    "Dataset",
    "Loader",
    "RawData",
    "Split",
    "augment_batch",
    "available_datasets",
    "load_dataset",
    "register_dataset",
    "train_tensors",
    "training_data",
    "unregister_dataset",
    "validate_arrays",
]
