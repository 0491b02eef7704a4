"""What the wedge study's steps share: the run context, replicates, the claim helper, spectra.

Every step (``step(out, config_json)``) rebuilds its inputs from the store and the config
(:func:`step_context`), so it runs the same on any executor.

**Replicates.** Network claims are decided over ``wedges.replicates`` independent replicates
(CLAIMS.md rule 3). The base population holds ``train.members = replicates x m`` members;
replicate ``r`` owns members ``r * m .. r * m + m - 1`` (:func:`replicate_members`). Members have
their own seeded inits and data orders, so the replicates are independent; anything a step draws
for replicate ``r`` comes from a seed stream of its own (``(seed, <step>, r, ...)``).

**Spectra.** Short-direction counts come from the exact spectrum (the dense Hessian on
``short_dirs.eval_samples`` training samples, then ``eigvalsh``) whenever ``D`` allows
(:data:`~lossatlas.probes.curvature.EXACT_MAX_DIM`); otherwise from stochastic Lanczos
quadrature (:func:`spectrum_part` records which).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lossatlas.claims import ClaimMaker
from lossatlas.context import run_dataset, template_model
from lossatlas.evaluate import evaluate_points
from lossatlas.params import ParamSpace
from lossatlas.probes.curvature import EXACT_MAX_DIM, count_above, hessian_spectrum
from lossatlas.seeding import make_generator
from lossatlas.stages.output import StageOutput
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig

__all__ = [
    "PAPER_SETUP",
    "as_tensor_like",
    "claim_maker",
    "counts_of",
    "members_per_replicate",
    "replicate_members",
    "setup_line",
    "spectrum_part",
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
        f"{config.train.optimizer} lr {config.train.lr}, {config.train.epochs} epochs; "
        f"{config.wedges.replicates} replicates of {members_per_replicate(config)} networks"
    )


def members_per_replicate(config: RunConfig) -> int:
    """``m``: base members per replicate (``train.members / wedges.replicates``)."""
    return config.train.members // config.wedges.replicates


def replicate_members(config: RunConfig, replicate: int) -> range:
    """The base population's members that replicate ``replicate`` owns."""
    m = members_per_replicate(config)
    return range(replicate * m, (replicate + 1) * m)


def step_context(
    out: str, config: RunConfig
) -> tuple[AtlasStore, Any, torch.nn.Module, np.ndarray]:
    """The store, the dataset, the template model and the population's final params."""
    store = AtlasStore.open(out, create=False)
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    return store, dataset, model, store.read(f"{TRAIN_GROUP}/params")


def train_subset(dataset: Any, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training samples ``(X, y)`` (all of them for ``None``)."""
    x, y = dataset.split("train")
    return (x, y) if n is None else (x[:n], y[:n])


def as_tensor_like(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``values`` as a tensor on ``like``'s device and dtype."""
    return torch.as_tensor(np.asarray(values)).to(device=like.device, dtype=like.dtype)


def counts_of(eigenvalues: np.ndarray, thresholds: list[float]) -> dict[str, float]:
    """``threshold -> number of eigenvalues above it``, keyed ``f"{t:g}"``."""
    values = np.asarray(eigenvalues, dtype=np.float64)
    return {f"{t:g}": float(np.count_nonzero(values > t)) for t in thresholds}


def spectrum_part(out: str, config_json: str, point: np.ndarray, unit: str) -> StageOutput:
    """Short-direction counts at ``point`` (D,), and the train loss there: a curvature job.

    Exact (the dense Hessian's eigenvalues, stored as ``eigenvalues``) when the method is
    ``exact``, or ``auto`` with ``D <= EXACT_MAX_DIM``; otherwise the SLQ estimate, seeded by
    ``unit``. Scalars: ``counts``, ``loss`` (on the same samples as the Hessian), ``method``.
    """
    config = RunConfig.model_validate_json(config_json)
    opts = config.wedges.short_dirs
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    data = train_subset(dataset, opts.eval_samples)
    theta = as_tensor_like(point, dataset.x_train)
    loss, _ = evaluate_points(ParamSpace(model), theta.reshape(1, -1), *data)
    exact = opts.method == "exact" or (opts.method == "auto" and theta.numel() <= EXACT_MAX_DIM)
    arrays: dict[str, np.ndarray] = {}
    if exact:
        eigenvalues = hessian_spectrum(model, data, params=theta).cpu().numpy()
        arrays["eigenvalues"] = eigenvalues
        counts = counts_of(eigenvalues, opts.thresholds)
    else:
        estimate = count_above(
            model,
            data,
            thresholds=opts.thresholds,
            params=theta,
            method="slq",
            generator=make_generator(config.seed, "short_dirs", unit),
            num_probes=opts.num_probes,
            lanczos_steps=opts.lanczos_steps,
        )
        counts = {f"{t:g}": float(v) for t, v in estimate.items()}
    return StageOutput(
        arrays=arrays,
        scalars={
            "counts": counts,
            "loss": float(loss[0]),
            "method": "exact" if exact else "slq",
        },
    )
