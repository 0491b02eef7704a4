"""B4: the two networks, one that generalises well and one poorly, each its own population.

Both start from the run's core config and differ only in their label noise, weight decay,
augmentation and epochs (:class:`~lossatlas.studies.horoi.config.NetworkVariant`).
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


def config_for_network(base: Config, variant: NetworkVariant) -> Config:
    """The training config of one network: ``base`` with the variant's data and training knobs.

    One member (the study jumps from one optimum per network), the variant's label noise,
    weight decay, augmentation (the trainer ignores it for non-image data) and epochs. The
    seed and everything else stay ``base``'s, so both networks start from the same weights and
    see the same data order, and only the knobs differ.
    """
    core = core_config(base)
    return core.model_copy(
        update={
            "data": core.data.model_copy(
                update={"label_noise": variant.label_noise, "augment": variant.augment}
            ),
            "train": core.train.model_copy(
                update={
                    "members": 1,
                    "weight_decay": variant.weight_decay,
                    "epochs": core.train.epochs if variant.epochs is None else variant.epochs,
                    "snapshot_every": 0,
                }
            ),
        }
    )


def network(core: Config, horoi: HoroiConfig, net: str) -> tuple[Config, Any, nn.Module]:
    """Network ``net``'s training config, its dataset and its template model."""
    net_config = config_for_network(core, horoi.generalization.networks[net])
    dataset = run_dataset(net_config)
    return net_config, dataset, template_model(net_config, dataset)


def trained_point(
    store: AtlasStore, group: str, model: nn.Module
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Member 0 of the population in ``group``: its parameters ``(D,)`` and buffers.

    On the model's device and dtype. Raises ``ValueError`` when the member diverged or its
    parameters are not finished.
    """
    like = next(model.parameters())
    if store.read(f"{group}/diverged", (slice(0, 1),))[0]:
        raise ValueError(f"the network in {group} diverged in training; lower train.lr")
    params = torch.as_tensor(store.read(f"{group}/params", (0,)))
    if not torch.isfinite(params).all():
        raise ValueError(f"the network in {group} has no finished parameters")
    buffers = {
        name: torch.as_tensor(store.read(f"{group}/buffers/{name}", (0,))).to(like.device)
        for name, _ in model.named_buffers()
    }
    return params.to(device=like.device, dtype=like.dtype), buffers


def network_metrics(store: AtlasStore, net: str) -> dict[str, float]:
    """The network's final train accuracy, test accuracy and test loss, as trained."""
    group = train_group(net)
    out = {}
    for name in ("train_acc", "test_acc", "test_loss"):
        if store.has(f"{group}/history/{name}"):
            out[name] = float(store.read(f"{group}/history/{name}")[0, -1])
    return out


def train_network(
    core: Config, horoi: HoroiConfig, net: str, out: str | Path, *, executor: Executor | None
) -> TrainSummary:
    """Train network ``net`` (one member) into its own group, resumably."""
    net_config = config_for_network(core, horoi.generalization.networks[net])
    return train_stage(net_config, out, executor=executor, group=train_group(net))
