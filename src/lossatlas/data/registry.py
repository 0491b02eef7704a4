"""Dataset registry: name -> loader. Users add their own with :func:`register_dataset`."""

from __future__ import annotations

from collections.abc import Callable

from lossatlas.config import DataConfig
from lossatlas.data import loaders
from lossatlas.data.dataset import RawData
from lossatlas.errors import DataError

__all__ = ["Loader", "available_datasets", "get_loader", "register_dataset", "unregister_dataset"]

Loader = Callable[[DataConfig], RawData]
"""Reads (or generates) a dataset for a config; raises DataError for bad input."""

_REGISTRY: dict[str, Loader] = {
    "mnist1d": loaders.load_mnist1d,
    "digits": loaders.load_digits,
    "npz": loaders.load_npz,
    "mnist": loaders.load_mnist,
    "fashion_mnist": loaders.load_fashion_mnist,
    "cifar10": loaders.load_cifar10,
}


def available_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_REGISTRY)


def register_dataset(name: str, loader: Loader, *, overwrite: bool = False) -> None:
    """Make ``loader`` available as ``data.name=<name>``.

    ``loader(cfg)`` returns a :class:`RawData`; :func:`~lossatlas.data.load_dataset` then
    validates, splits, standardises and corrupts it like any built-in dataset.

    Raises:
        ValueError: ``name`` is empty or already registered (pass ``overwrite=True``).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if not callable(loader):
        raise ValueError(f"loader for dataset '{name}' is not callable: {loader!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"dataset '{name}' is already registered (pass overwrite=True)")
    _REGISTRY[name] = loader


def unregister_dataset(name: str) -> None:
    """Remove a registered dataset (mainly for tests); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def get_loader(name: str) -> Loader:
    """The loader registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DataError(
            f"unknown dataset '{name}' (available: {', '.join(available_datasets())})"
        ) from None
