"""What a probe measures: one trained point, from the store or from a user checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lossatlas.checkpoint import load_checkpoint
from lossatlas.config import CORE_SECTIONS, Config
from lossatlas.context import run_dataset, template_model
from lossatlas.data import Dataset
from lossatlas.errors import StoreError
from lossatlas.location import Location
from lossatlas.params import ParamSpace
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore

__all__ = ["Target", "store_config", "target_from_checkpoint", "target_from_store"]


@dataclass
class Target:
    """A model at one point of weight space, with its data.

    Attributes:
        model: the template module; its own parameters are *not* the point.
        space: flat view of ``model``.
        params: ``(D,)`` the point.
        buffers: the point's buffers (BatchNorm statistics), name -> tensor.
        dataset: the data the point was trained on.
        source: a human description, recorded with every probe result.
        out: the store the point came from (``None`` for a checkpoint).
        member: its member index in that store's population.
    """

    model: nn.Module
    space: ParamSpace
    params: torch.Tensor
    buffers: dict[str, torch.Tensor]
    dataset: Dataset
    source: str
    out: Location | None = None
    member: int | None = None

    def load_into_model(self) -> nn.Module:
        """Copy the point into the module (for code that wants a plain stateful model)."""
        self.space.load(self.params, self.buffers)
        return self.model


def store_config(store: AtlasStore) -> Config:
    """The config a store was made with."""
    recorded = store.attrs().get("config")
    if not isinstance(recorded, dict):
        raise StoreError(f"{store.path} records no config; it was not made by lossatlas train")
    return Config.model_validate({k: v for k, v in recorded.items() if k in CORE_SECTIONS})


def target_from_store(store: AtlasStore, member: int = 0) -> Target:
    """Member ``member`` of the population trained in ``store``."""
    if not store.has(f"{TRAIN_GROUP}/params"):
        raise StoreError(f"{store.out_dir} holds no trained population; run lossatlas train first")
    config = store_config(store)
    members = store.attrs(TRAIN_GROUP).get("members", 0)
    if not 0 <= member < members:
        raise StoreError(f"member {member} does not exist (the population has {members})")
    if store.read(f"{TRAIN_GROUP}/diverged", (slice(member, member + 1),))[0]:
        raise StoreError(f"member {member} diverged during training; probe another --member")
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    device, dtype = dataset.x_train.device, dataset.x_train.dtype
    params = torch.as_tensor(store.read(f"{TRAIN_GROUP}/params", (member,)))
    if not torch.isfinite(params).all():
        raise StoreError(
            f"member {member} has no finished parameters in {store.path}; "
            "re-run lossatlas train to finish it"
        )
    buffers = {
        name: torch.as_tensor(store.read(f"{TRAIN_GROUP}/buffers/{name}", (member,))).to(device)
        for name, _ in model.named_buffers()
    }
    return Target(
        model=model,
        space=ParamSpace(model),
        params=params.to(device=device, dtype=dtype),
        buffers=buffers,
        dataset=dataset,
        source=f"{store.out_dir} member {member}",
        out=store.out_dir,
        member=member,
    )


def target_from_checkpoint(config: Config, checkpoint: str | Path) -> Target:
    """The model ``config.model`` on ``config.data`` with weights from a user checkpoint."""
    dataset = run_dataset(config)
    model = load_checkpoint(checkpoint, template_model(config, dataset))
    space = ParamSpace(model)
    return Target(
        model=model,
        space=space,
        params=space.flatten(),
        buffers=space.buffers(),
        dataset=dataset,
        source=f"checkpoint {checkpoint}",
    )
