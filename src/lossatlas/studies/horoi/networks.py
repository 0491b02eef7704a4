"""B4: the two networks, one that generalises well and one poorly, each its own population.

Both start from the run's core config and differ only in their label noise, weight decay,
augmentation, training-set size and epochs
(:class:`~lossatlas.studies.horoi.config.NetworkVariant`). Each network is a population of one
member per base seed (member ``i`` for ``generalization.seeds[i]``): independent networks, so
every claim about them is decided over base seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossatlas.config import Config, core_config
from lossatlas.context import run_dataset, template_model
from lossatlas.execute import Executor
from lossatlas.stages.train import TrainSummary, train_stage
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi._common import train_group
from lossatlas.studies.horoi.config import HoroiConfig, NetworkVariant

__all__ = [
    "config_for_network",
    "network",
    "network_metrics",
    "train_network",
    "trained_point",
]


def config_for_network(base: Config, variant: NetworkVariant, members: int = 1) -> Config:
    """The training config of one network: ``base`` with the variant's data and training knobs.

    ``members`` independent networks (one per base seed); the variant's label noise, weight
    decay, augmentation (the trainer ignores it for non-image data), training-set size and
    epochs, each left as ``base``'s where the variant says ``None``. The seed and everything
    else stay ``base``'s, so member ``i`` of both networks starts from the same weights.
    """
    core = core_config(base)

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    data = core.data.model_copy(
        update={
            "label_noise": pick(variant.label_noise, core.data.label_noise),
            "augment": pick(variant.augment, core.data.augment),
            "n_train": pick(variant.n_train, core.data.n_train),
        }
    )
    train = core.train.model_copy(
        update={
            "members": members,
            "weight_decay": pick(variant.weight_decay, core.train.weight_decay),
            "epochs": pick(variant.epochs, core.train.epochs),
            "snapshot_every": 0,
        }
    )
    return core.model_copy(update={"data": data, "train": train})


def network(core: Config, horoi: HoroiConfig, net: str) -> tuple[Config, Any, nn.Module]:
    """Network ``net``'s training config, its dataset and its template model."""
    members = len(horoi.generalization.seeds)
    net_config = config_for_network(core, horoi.generalization.networks[net], members)
    dataset = run_dataset(net_config)
    return net_config, dataset, template_model(net_config, dataset)


def trained_point(
    store: AtlasStore, group: str, model: nn.Module, member: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Member ``member`` of the population in ``group``: its parameters ``(D,)`` and buffers.

    On the model's device and dtype. Raises ``ValueError`` when the member diverged or its
    parameters are not finished.
    """
    like = next(model.parameters())
    if store.read(f"{group}/diverged", (slice(member, member + 1),))[0]:
        raise ValueError(f"network {member} in {group} diverged in training; lower train.lr")
    params = torch.as_tensor(store.read(f"{group}/params", (member,)))
    if not torch.isfinite(params).all():
        raise ValueError(f"network {member} in {group} has no finished parameters")
    buffers = {
        name: torch.as_tensor(store.read(f"{group}/buffers/{name}", (member,))).to(like.device)
        for name, _ in model.named_buffers()
    }
    return params.to(device=like.device, dtype=like.dtype), buffers


def network_metrics(store: AtlasStore, net: str) -> dict[str, list[float]]:
    """Each member's (base seed's) final train/test accuracy and loss, as trained.

    ``train_*`` are measured on the network's own training set (its noisy labels, if any).
    """
    group = train_group(net)
    out = {}
    for name in ("train_acc", "test_acc", "train_loss", "test_loss"):
        if store.has(f"{group}/history/{name}"):
            out[name] = [float(v) for v in store.read(f"{group}/history/{name}")[:, -1]]
    return out


def train_network(
    core: Config, horoi: HoroiConfig, net: str, out: str | Path, *, executor: Executor | None
) -> TrainSummary:
    """Train network ``net`` (one member per base seed) into its own group, resumably."""
    members = len(horoi.generalization.seeds)
    net_config = config_for_network(core, horoi.generalization.networks[net], members)
    return train_stage(net_config, out, executor=executor, group=train_group(net))
