"""The run context of a config: its store, its dataset and its template model.

Every stage and study step starts from these three, built the same way from the same config, so
a unit of work that runs in another process (a Ray worker) rebuilds exactly what the driver had.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from lossatlas.config import CORE_SECTIONS, RUNTIME_SECTIONS, Config
from lossatlas.data import Dataset, load_dataset
from lossatlas.models import build_model
from lossatlas.runtime import resolve_device, resolve_dtype
from lossatlas.seeding import derive_seed
from lossatlas.store import AtlasStore

__all__ = ["config_fingerprint", "open_store", "run_dataset", "template_model"]


def config_fingerprint(config: Config) -> dict[str, Any]:
    """The settings that determine the numbers; device and executor may change between runs."""
    return config.model_dump(mode="json", include=set(CORE_SECTIONS - RUNTIME_SECTIONS))


def open_store(out: str | Path, config: Config) -> AtlasStore:
    """Open or create ``OUT/atlas.zarr`` for ``config`` (refusing a store of another config)."""
    return AtlasStore.open(
        out, config=config.model_dump(mode="json"), fingerprint=config_fingerprint(config)
    )


def run_dataset(config: Config) -> Dataset:
    """The dataset of ``config`` on its device and dtype (cached per config in-process)."""
    return _cached_dataset(config.model_dump_json(include={"data", "device", "dtype"}))


@lru_cache(maxsize=4)
def _cached_dataset(data_json: str) -> Dataset:
    # Units of one run share a process on the local executor; build the data once.
    config = Config.model_validate_json(data_json)
    device, dtype = resolve_device(config.device), resolve_dtype(config.dtype)
    return load_dataset(config.data).to(device, dtype)


def template_model(config: Config, dataset: Dataset) -> torch.nn.Module:
    """The run's model with its seeded template weights, on the run's device and dtype."""
    model = build_model(
        config.model,
        dataset.input_shape,
        dataset.num_classes,
        seed=derive_seed(config.seed, "template"),
    )
    device, dtype = resolve_device(config.device), resolve_dtype(config.dtype)
    return model.to(device=device, dtype=dtype)
