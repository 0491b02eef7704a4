"""What the wedge study's steps share: their run context, their claim helper, the counts.

Every step (``step(out, config_json)``) rebuilds its inputs from the store and the config
(:func:`step_context`), so it runs the same on any executor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from lossatlas.claims import ClaimMaker
from lossatlas.context import run_dataset, template_model
from lossatlas.probes.curvature import count_above
from lossatlas.seeding import make_generator
from lossatlas.stages.output import StageOutput
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig

__all__ = [
    "PAPER_SETUP",
    "as_tensor_like",
    "claim_maker",
    "monotone",
    "setup_line",
    "short_dir_counts",
    "short_dirs_part",
    "step_context",
    "train_subset",
]

PAPER_SETUP = "CIFAR-10 / Fashion-MNIST CNNs and MLPs (Fort & Jastrzebski 2019)"


def claim_maker(config: RunConfig) -> ClaimMaker:
    """The wedge study's claim helper: the paper's setup and ours filled in."""
    return ClaimMaker(PAPER_SETUP, setup_line(config))


def setup_line(config: RunConfig) -> str:
    """What the network claims were measured on, in one line."""
    width = config.model.width or "default"
    return (
        f"{config.data.name}, {config.model.name} (width {width}), "
        f"{config.train.optimizer} lr {config.train.lr}, {config.train.epochs} epochs"
    )


def step_context(
    out: str, config: RunConfig
) -> tuple[AtlasStore, Any, torch.nn.Module, np.ndarray]:
    """The store, the dataset, the template model and the population's final params."""
    store = AtlasStore.open(out, create=False)
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    return store, dataset, model, store.read(f"{TRAIN_GROUP}/params")


def train_subset(dataset: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training samples ``(X, y)``."""
    x, y = dataset.split("train")
    return x[:n], y[:n]


def short_dir_counts(
    model: torch.nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    point: torch.Tensor,
    config: RunConfig,
    unit: str,
) -> dict[str, float]:
    """Eigenvalue counts above each threshold at ``point`` (D,), seeded by ``unit``."""
    opts = config.wedges.short_dirs
    counts = count_above(
        model,
        data,
        thresholds=opts.thresholds,
        params=point,
        method=opts.method,  # type: ignore[arg-type]
        generator=make_generator(config.seed, "short_dirs", unit),
        num_probes=opts.num_probes,
        lanczos_steps=opts.lanczos_steps,
    )
    return {f"{t:g}": float(v) for t, v in counts.items()}


def short_dirs_part(out: str, config_json: str, point: np.ndarray, unit: str) -> StageOutput:
    """Short-direction counts at ``point`` (D,), a curvature job; ``unit`` seeds its probes."""
    config = RunConfig.model_validate_json(config_json)
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    data = train_subset(dataset, config.wedges.short_dirs.eval_samples)
    counts = short_dir_counts(model, data, as_tensor_like(point, dataset.x_train), config, unit)
    return StageOutput(scalars={"counts": counts})


def as_tensor_like(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``values`` as a tensor on ``like``'s device and dtype."""
    return torch.as_tensor(np.asarray(values)).to(device=like.device, dtype=like.dtype)


def monotone(values: list[float], sign: int) -> float:
    """Spearman correlation of ``values`` with their order, times ``sign`` (NaN-safe)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2 or len(set(finite)) == 1:
        return float("nan")
    rho = spearmanr(range(len(values)), values).statistic
    return float(sign * rho)
