"""Snapshot ensembles from a cyclic learning rate: prediction ensemble vs SWA vs one snapshot.

PAPERS.md A7 (paper §4.5, Fig 6). From a shared, already trained start point, a cyclic LR
(cosine restarts from ``LR_max`` down to ``min_factor * LR_max``) throws the network into a new
region at every restart and lets it settle at the cycle's end, where a snapshot is taken. The
claim: the higher ``LR_max``, the further apart (in angle and in predicted labels) successive
snapshots land, which helps a *prediction* ensemble (average of softmax outputs) and hurts a
*weight* average (SWA).

The experiment here:

1. **Warm-up** (:func:`cyclic_snapshots`, ``warmup_epochs``): the start point is trained first,
   as its own one-member population run, because the paper starts cycling from a trained
   network.
2. **Cycling**: ONE population with one member per ``LR_max``, all from that start, trained in
   lock-step; each member's snapshots are taken at its cycle ends.
3. **Measurements** (:func:`measure_snapshots`) for each member: test accuracy of every snapshot
   (the last one, and the mean over snapshots), of the prediction ensemble over the snapshots
   (and of the ensemble of the first ``s``), of SWA (weights averaged; BatchNorm statistics
   recomputed on the training inputs at the average, as SWA requires), the angles and the label
   disagreement between successive snapshots, and the same over all pairs.
4. **Baselines** (claim ``wedge.ensemble_baselines``), measured the same way:

   * an *independent-run* ensemble: ``independent_members`` networks from independent seeded
     inits, trained together as one population, each with the budget of a whole snapshot run
     (``warmup_epochs + cycles * cycle_epochs`` epochs, cosine-annealed from
     ``independent_lr``). So it costs ``independent_members`` times as much as one snapshot
     ensemble: it is the usual upper reference, not a same-cost competitor.
   * FGE (fast geometric ensembling, Garipov et al. 2018): from the same start, short cycles
     (``fge_cycle_epochs``, 2 by default) at a small ``fge_lr_max`` (half the warm-up LR, so
     the cycles explore around one mode), a snapshot at every cycle end.

Why SGD and these LRs: the paper used Adam with LR_max 16e-4 .. 200e-4 on a CIFAR-10 CNN. On
MNIST-1D with the default ``mlp`` the rest of lossatlas trains with SGD (momentum 0.9, LR 0.1),
so the start point is trained that way (30 epochs cosine-annealed from 0.1: ≈ 0.94 train and
≈ 0.61-0.62 test accuracy) and LR_max spans 0.01 .. 0.4, from a tenth of the training LR,
where successive snapshots stay within ≈ 0.5° and SWA ≈ ensemble (like the paper's 16e-4), to
4x it, near the edge of stability, where the snapshots no longer fit the training set
(≈ 0.8 train accuracy) and SWA falls well below the ensemble (towards the paper's 200e-4
row). Cycles of 3 epochs let the LR settle at the end of each one; 10 cycles give the
paper's 10 snapshots.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from lossatlas.analysis import ensembles as ens
from lossatlas.config import ScheduleConfig, StrictModel
from lossatlas.evaluate import LossFn, predict_points
from lossatlas.params import ParamSpace
from lossatlas.population import SnapshotFn, _resolve_data, train_population
from lossatlas.probes._grid import norm_modules, recompute_bn_statistics
from lossatlas.seeding import derive_seed
from lossatlas.studies.claims import Claim

__all__ = [
    "CyclicSnapshots",
    "EnsembleConfig",
    "EnsembleResult",
    "cyclic_snapshots",
    "ensemble_claims",
    "ensemble_experiment",
    "ensemble_figures",
    "measure_snapshots",
    "recompute_bn",
    "run_ensembles",
]

Split = tuple[torch.Tensor, torch.Tensor]

# Paper A7, CIFAR-10 CNN, 10 snapshots (PAPERS.md); "≈" values read off Fig 6.
PAPER_TABLE: dict[str, Any] = {
    "accuracy": {
        "lr_max": [16e-4, 32e-4, 64e-4],
        "ensemble": [0.733, 0.740, 0.738],
        "swa": [0.728, 0.724, 0.695],
        "single": [0.722, 0.718, 0.714],
    },
    "diversity": {
        "lr_max": [16e-4, 32e-4, 64e-4, 100e-4, 200e-4],
        "angle_deg": [8.0, 14.0, 24.5, 40.0, 60.0],
        "disagreement": [None, 0.105, 0.15, 0.20, 0.34],
        "swa_minus_ensemble": [0.0, -0.004, -0.016, -0.043, -0.41],
    },
}


# --------------------------------------------------------------------------- configuration


class EnsembleConfig(StrictModel):
    """``lossatlas ensemble``: cyclic-LR snapshot ensembles and their baselines (PAPERS A7).

    The defaults suit MNIST-1D with the default ``mlp`` and take well under a minute on two CPU
    cores (see the module docstring for why these values); :meth:`smoke` gives a seconds-long
    version for tests.
    """

    lr_max: list[float] = Field(
        [0.01, 0.03, 0.1, 0.2, 0.4],
        min_length=1,
        description="peak LR of the cycles, one population member each, strictly increasing",
    )
    cycles: int = Field(10, ge=2, description="cycles = snapshots per LR_max (paper: 10)")
    cycle_epochs: float = Field(3.0, gt=0.0, description="length of one cycle in epochs")
    min_factor: float = Field(
        0.01, ge=0.0, lt=1.0, description="LR at a cycle's end, as a fraction of LR_max"
    )
    warmup_epochs: int = Field(
        30, ge=0, description="epochs that train the shared start point before cycling"
    )
    warmup_lr: float = Field(0.1, gt=0.0)
    warmup_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="cosine anneals to 1% of warmup_lr: a settled start point"
    )
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum, or Adam beta1")
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(128, gt=0)
    independent_members: int = Field(
        5, ge=0, description="independent-run baseline ensemble size (0: skip, else >= 2)"
    )
    independent_lr: float = Field(0.1, gt=0.0, description="peak of its cosine schedule")
    fge_cycles: int = Field(10, ge=0, description="FGE baseline snapshots (0: skip, else >= 2)")
    fge_cycle_epochs: float = Field(2.0, gt=0.0, description="Garipov et al.: 2-4 epochs")
    fge_lr_max: float = Field(0.05, gt=0.0, description="small: half the warm-up LR")
    fge_min_factor: float = Field(0.01, ge=0.0, lt=1.0)
    bn_batch_size: int = Field(
        1024, gt=0, description="batch size when BatchNorm statistics are recomputed"
    )
    tie_sigmas: float = Field(
        2.0,
        ge=0.0,
        description="'ensemble >= single' allows a shortfall of this many paired standard "
        "errors: a few test samples flipping is a tie, not a loss",
    )

    @field_validator("lr_max")
    @classmethod
    def _increasing(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError("every lr_max must be positive")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ValueError("lr_max must be strictly increasing")
        return values

    @field_validator("independent_members", "fge_cycles")
    @classmethod
    def _zero_or_two(cls, value: int) -> int:
        if value == 1:
            raise ValueError("an ensemble baseline needs 0 (skip) or at least 2 members")
        return value

    @classmethod
    def smoke(cls) -> EnsembleConfig:
        """Tiny values for tests: seconds on the smoke-size MNIST-1D."""
        return cls(
            lr_max=[0.02, 0.2],
            cycles=3,
            cycle_epochs=1,
            warmup_epochs=2,
            independent_members=2,
            fge_cycles=2,
            fge_cycle_epochs=1,
            batch_size=64,
        )


# --------------------------------------------------------------------------- BatchNorm


def recompute_bn(
    space: ParamSpace,
    thetas: torch.Tensor,
    x: torch.Tensor,
    *,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Buffers for each point with BatchNorm statistics recomputed on the inputs ``x``.

    For every point, each normalisation layer that tracks running statistics starts from reset
    statistics and accumulates the cumulative average over ``x`` in batches of ``batch_size``
    (all of ``x`` at once by default), in train mode; every other layer stays in eval mode, so
    dropout is off and the result is deterministic (see
    :func:`~lossatlas.probes._grid.recompute_bn_statistics`, which does the work). This is what
    SWA and any other point that was never trained on (an average of weights) need: the running
    statistics of the snapshots do not describe the activations at their average.

    Args:
        space: the model's parameter space; its module is used as a stateless template and its
            train/eval flags and BatchNorm momenta are restored.
        thetas: ``(B, D)`` points (or one ``(D,)`` point).
        x: ``(N, *input)`` inputs (labels are not needed).
        batch_size: samples per forward pass.

    Returns:
        name -> ``(B, *shape)`` for every buffer of the module (buffers of other layers are
        copies of the module's), ready for ``predict_points(..., buffers_batched=True)``.
    """
    points = thetas.reshape(1, -1) if thetas.dim() == 1 else thetas
    step = batch_size or x.shape[0]
    batches = [x[start : start + step] for start in range(0, x.shape[0], step)]
    # One point at a time (no vmap), as this has always run: the statistics stay bit-identical.
    return recompute_bn_statistics(space, points, batches, space.buffers())


# --------------------------------------------------------------------------- training


@dataclass
class CyclicSnapshots:
    """Result of :func:`cyclic_snapshots`.

    Attributes:
        space: flat-vector view of the model.
        lr_max: ``(K,)`` peak LR of each member.
        start: ``(D,)`` shared start point (after the warm-up).
        snapshots: ``(K, S, D)`` parameters at the end of each of the ``S = cycles`` cycles,
            or ``None`` when they were streamed to ``on_snapshot`` with ``keep=False``.
        snapshot_steps: ``(S,)`` optimiser step (counted from the start of cycling) of each.
        cycle_steps: optimiser steps per cycle.
        steps_per_epoch: optimiser steps per epoch.
        history: ``"{split}_{metric}"`` -> ``(K, epochs + 1)`` of the cycling run.
        warmup_history: the same for the warm-up run (one member), or ``None`` without one.
        diverged: ``(K,)`` bool.
    """

    space: ParamSpace
    lr_max: torch.Tensor
    start: torch.Tensor
    snapshots: torch.Tensor | None
    snapshot_steps: list[int]
    cycle_steps: int
    steps_per_epoch: int
    history: dict[str, torch.Tensor]
    warmup_history: dict[str, torch.Tensor] | None
    diverged: torch.Tensor


def _train_size(data: Any, batch_size: int) -> int:
    x_train, _, _ = _resolve_data(data)
    return math.ceil(x_train.shape[0] / batch_size)


def _warm_start(
    model: nn.Module,
    data: Any,
    *,
    epochs: int,
    lr: float,
    schedule: Literal["constant", "cosine"] = "cosine",
    start_params: torch.Tensor | None = None,
    seed: int = 0,
    **train_kw: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Train the start point ``(D,)`` for ``epochs`` epochs as a one-member population.

    Starts from ``start_params`` or the model's current parameters; ``epochs=0`` returns that
    point unchanged (and no history).
    """
    start = ParamSpace(model).flatten() if start_params is None else start_params.detach()
    if epochs == 0:
        return start.clone(), None
    warm = train_population(
        model,
        data,
        members=1,
        epochs=epochs,
        lr=lr,
        schedule=ScheduleConfig(kind=schedule, min_factor=0.01),
        start_params=start,
        seed=derive_seed(seed, "ensemble", "warmup"),
        **train_kw,
    )
    return warm.params[0].clone(), warm.history


def cyclic_snapshots(
    model: nn.Module,
    data: Any,
    *,
    lr_max: Sequence[float],
    cycles: int = 10,
    cycle_epochs: float = 3.0,
    min_factor: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    warmup_epochs: int = 0,
    warmup_lr: float = 0.1,
    warmup_schedule: Literal["constant", "cosine"] = "cosine",
    start_params: torch.Tensor | None = None,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    on_snapshot: SnapshotFn | None = None,
    keep: bool = True,
    purpose: str = "cyclic",
) -> CyclicSnapshots:
    """Snapshots at the cycle ends of a cyclic LR, one population member per ``LR_max``.

    All members start from one shared point: ``start_params`` (or the model's current
    parameters), first trained for ``warmup_epochs`` with ``warmup_lr`` when asked (the paper
    cycles from a trained network). Then ONE population of ``len(lr_max)`` members trains for
    ``cycles`` cosine-restart cycles of ``cycle_epochs`` epochs; member ``k`` has base LR
    ``lr_max[k]``, decaying to ``min_factor * lr_max[k]`` at every cycle end, where its
    parameters are kept.

    Args:
        model: any ``nn.Module`` (a template; its parameters are not changed).
        data: ``(X, y)``, a ``DataLoader`` or a lossatlas ``Dataset``.
        lr_max: peak LR of each member.
        cycles: number of cycles, i.e. snapshots per member.
        cycle_epochs: epochs per cycle (fractions allowed: a cycle is
            ``round(cycle_epochs * steps_per_epoch)`` steps, as in the schedule).
        min_factor: LR at a cycle's end as a fraction of its ``LR_max``.
        optimizer, momentum, weight_decay, batch_size: as in
            :func:`~lossatlas.population.train_population`; used by the warm-up too.
        warmup_epochs, warmup_lr, warmup_schedule: the warm-up run (0 epochs: none).
        start_params: ``(D,)`` start point (default: the model's current parameters).
        seed: root seed; the warm-up and the cycling draw their data orders from
            ``derive_seed(seed, "ensemble", ...)``.
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.
        on_snapshot: ``on_snapshot(cycle, step, params (K, D))`` at every cycle end, e.g. to
            stream snapshots to the store (``cycle`` counts from 0).
        keep: keep the ``(K, S, D)`` snapshots in memory.
        purpose: names the seed stream of the cycling run (two runs with different purposes
            draw different data orders).

    Returns:
        a :class:`CyclicSnapshots`; ``.snapshots`` has shape ``(len(lr_max), cycles, D)``.
    """
    if cycles < 1:
        raise ValueError(f"cycles must be at least 1, got {cycles}")
    lrs = [float(v) for v in lr_max]
    if not lrs:
        raise ValueError("lr_max is empty")
    train_kw = {
        "optimizer": optimizer,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "loss_fn": loss_fn,
    }
    start, warm_history = _warm_start(
        model,
        data,
        epochs=warmup_epochs,
        lr=warmup_lr,
        schedule=warmup_schedule,
        start_params=start_params,
        seed=seed,
        **train_kw,
    )
    steps_per_epoch = _train_size(data, batch_size)
    # The same rounding as Schedule.cycle_ends, so snapshots fall exactly where the LR is lowest.
    cycle_steps = max(round(cycle_epochs * steps_per_epoch), 1)
    epochs = math.ceil(cycles * cycle_steps / steps_per_epoch)
    kept: list[torch.Tensor] = []
    steps: list[int] = []

    def at_cycle_end(index: int, step: int, params: torch.Tensor) -> None:
        # The population also reports the start (step 0), and with fractional cycles it may
        # run past the last wanted cycle: keep cycle ends 1..cycles only.
        if step == 0 or len(steps) >= cycles:
            return
        if on_snapshot is not None:
            on_snapshot(len(steps), step, params)
        if keep:
            kept.append(params.detach().clone())
        steps.append(step)

    pop = train_population(
        model,
        data,
        members=len(lrs),
        epochs=epochs,
        lr=lrs,
        schedule=ScheduleConfig(kind="cyclic", cycle_epochs=cycle_epochs, min_factor=min_factor),
        start_params=start,
        seed=derive_seed(seed, "ensemble", purpose),
        snapshot_every=cycle_steps,
        snapshot_unit="step",
        on_snapshot=at_cycle_end,
        **train_kw,
    )
    return CyclicSnapshots(
        space=pop.space,
        lr_max=torch.tensor(lrs, dtype=torch.float64),
        start=start,
        snapshots=torch.stack(kept, dim=1) if keep else None,
        snapshot_steps=steps,
        cycle_steps=cycle_steps,
        steps_per_epoch=steps_per_epoch,
        history=pop.history,
        warmup_history=warm_history,
        diverged=pop.diverged,
    )


# --------------------------------------------------------------------------- measurement


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return (logits.argmax(dim=-1) == y).double().mean(dim=-1).cpu().numpy()


def measure_snapshots(
    space: ParamSpace,
    points: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bn_x: torch.Tensor | None = None,
    bn_batch_size: int | None = None,
    origin: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Ensemble measurements of one set of ``S`` points ``(S, D)`` on the split ``(x, y)``.

    The points are snapshots of one trajectory (in order) or members of an ensemble. When the
    model has BatchNorm layers and ``bn_x`` is given, statistics are recomputed on ``bn_x`` at
    every point and at the SWA average (see :func:`recompute_bn`); otherwise the module's
    buffers are used.

    Returns (numpy; ``S`` snapshots):
        ``snapshot_acc`` (S,), ``single_acc_last``, ``single_acc_mean``, ``ensemble_acc``,
        ``running_ensemble_acc`` (S,), ``swa_acc``, ``swa_minus_ensemble``,
        ``ensemble_minus_single_se`` (standard error of ensemble - last snapshot accuracy,
        paired over the samples),
        ``successive_angle`` (S-1,) degrees between the weight vectors,
        ``successive_angle_from_origin`` (S-1,) between displacements from ``origin`` (NaN
        without one), ``successive_disagreement`` (S-1,), ``angle_mean`` and
        ``disagreement_mean`` (their means), ``angle_matrix`` and ``disagreement_matrix``
        (S, S), ``pairwise_angle`` and ``pairwise_disagreement`` (means over all pairs).
        Scalars are 0-d arrays. A set with a non-finite point (a diverged member) gives NaN
        everywhere.
    """
    s = points.shape[0]
    if not bool(torch.isfinite(points).all()):
        return _nan_measurements(s)
    with_bn = bn_x is not None and bool(norm_modules(space.model))
    swa = ens.swa_average(points).reshape(1, -1)
    both = torch.cat([points, swa])
    buffers = recompute_bn(space, both, bn_x, batch_size=bn_batch_size) if with_bn else None
    logits = predict_points(space, both, x, buffers=buffers, buffers_batched=with_bn)
    accs = _accuracy(logits, y)
    probs = ens.softmax(logits[:s].cpu().numpy())
    labels = y.cpu().numpy()
    preds = ens.predictions(probs)
    weights = points.double().cpu().numpy()
    angles_from = (
        ens.successive_angles(weights, origin=origin.double().cpu().numpy())
        if origin is not None
        else np.full(s - 1, np.nan)
    )
    angles = ens.successive_angles(weights)
    dis = ens.successive_disagreement(preds)
    angle_mat = ens.angle_matrix(weights)
    dis_mat = ens.disagreement_matrix(preds)
    ensemble = ens.ensemble_accuracy(probs, labels)
    ensemble_preds = ens.predictions(ens.ensemble_probs(probs))
    out = {
        "snapshot_acc": accs[:s],
        "single_acc_last": accs[s - 1],
        "single_acc_mean": accs[:s].mean(),
        "ensemble_acc": ensemble,
        "running_ensemble_acc": ens.running_ensemble_accuracy(probs, labels),
        "swa_acc": accs[s],
        "swa_minus_ensemble": accs[s] - ensemble,
        "ensemble_minus_single_se": ens.accuracy_difference_se(ensemble_preds, preds[-1], labels),
        "successive_angle": angles,
        "successive_angle_from_origin": angles_from,
        "successive_disagreement": dis,
        "angle_mean": angles.mean() if s > 1 else np.nan,
        "disagreement_mean": dis.mean() if s > 1 else np.nan,
        "angle_matrix": angle_mat,
        "disagreement_matrix": dis_mat,
        "pairwise_angle": ens.mean_offdiagonal(angle_mat),
        "pairwise_disagreement": ens.mean_offdiagonal(dis_mat),
    }
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _nan_measurements(s: int) -> dict[str, np.ndarray]:
    shapes = {
        "snapshot_acc": (s,),
        "running_ensemble_acc": (s,),
        "successive_angle": (s - 1,),
        "successive_angle_from_origin": (s - 1,),
        "successive_disagreement": (s - 1,),
        "angle_matrix": (s, s),
        "disagreement_matrix": (s, s),
    }
    scalars = (
        "single_acc_last",
        "single_acc_mean",
        "ensemble_acc",
        "swa_acc",
        "swa_minus_ensemble",
        "ensemble_minus_single_se",
        "angle_mean",
        "disagreement_mean",
        "pairwise_angle",
        "pairwise_disagreement",
    )
    return {
        **{k: np.full(shape, np.nan) for k, shape in shapes.items()},
        **{k: np.asarray(np.nan) for k in scalars},
    }


# --------------------------------------------------------------------------- experiment


@dataclass
class EnsembleResult:
    """Result of :func:`ensemble_experiment` / :func:`run_ensembles`.

    Attributes:
        arrays: numpy arrays by name. ``L = len(lr_max)`` rows, ``S = cycles`` snapshots:
            ``lr_max`` (L,), ``snapshot_steps`` (S,), ``start_test_acc`` (),
            ``diverged`` (L,), and every key of :func:`measure_snapshots` stacked over LR_max
            (``snapshot_acc`` (L, S), ``ensemble_acc`` (L,), ``successive_angle`` (L, S-1),
            ``angle_matrix`` (L, S, S), ...). Baselines, when run, under ``independent/`` and
            ``fge/`` with the keys of :func:`measure_snapshots` (unstacked; for
            ``independent/`` the "snapshots" are the members, in seed order).
        claims: ``wedge.ensemble_vs_swa`` and ``wedge.ensemble_baselines`` (filled by
            :func:`run_ensembles` or :func:`ensemble_claims`).
        figures: file name -> PNG bytes (filled by :func:`run_ensembles`).
        meta: config, sizes, setup description and wall times.
    """

    arrays: dict[str, np.ndarray]
    claims: list[Claim] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _splits(data: Any, test_data: Split | None) -> tuple[Split, Split, str]:
    x_train, y_train, splits = _resolve_data(data)
    if test_data is not None:
        return (x_train, y_train), test_data, "test"
    if "test" in splits:
        return (x_train, y_train), splits["test"], "test"
    # An (X, y) pair has no held-out split; say so in the result rather than fail.
    return (x_train, y_train), (x_train, y_train), "train"


def ensemble_experiment(
    model: nn.Module,
    data: Any,
    config: EnsembleConfig | None = None,
    *,
    seed: int = 0,
    test_data: Split | None = None,
    start_params: torch.Tensor | None = None,
    loss_fn: LossFn | None = None,
    progress: Callable[[str], None] | None = None,
) -> EnsembleResult:
    """Run the cyclic-LR snapshot experiment and its baselines; measure everything.

    Args:
        model: any ``nn.Module``; the start point is its current parameters (or
            ``start_params``), trained for ``config.warmup_epochs`` first.
        data: a lossatlas ``Dataset`` (its test split is measured), ``(X, y)`` or a
            ``DataLoader`` (then pass ``test_data``, or the training data is measured).
        config: every knob (default :class:`EnsembleConfig`).
        seed: root seed of data orders and of the independent members' inits.
        test_data: ``(X, y)`` to measure on, overriding the dataset's test split.
        start_params: ``(D,)`` start point instead of the model's parameters.
        loss_fn: training loss; cross-entropy by default.
        progress: called with a short message before each stage.

    Returns:
        an :class:`EnsembleResult` with ``arrays`` and ``meta`` (no claims or figures yet).
    """
    cfg = config or EnsembleConfig()
    say = progress or (lambda message: None)
    (x_train, _), (x_test, y_test), measured_on = _splits(data, test_data)
    timings: dict[str, float] = {}
    train_kw = {
        "optimizer": cfg.optimizer,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size,
        "loss_fn": loss_fn,
    }

    say("ensembles: warm-up and cyclic snapshots")
    t0 = time.perf_counter()
    run = cyclic_snapshots(
        model,
        data,
        lr_max=cfg.lr_max,
        cycles=cfg.cycles,
        cycle_epochs=cfg.cycle_epochs,
        min_factor=cfg.min_factor,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr,
        warmup_schedule=cfg.warmup_schedule,
        start_params=start_params,
        seed=seed,
        **train_kw,
    )
    timings["cyclic"] = time.perf_counter() - t0
    assert run.snapshots is not None

    def measure(
        points: torch.Tensor, origin: torch.Tensor | None, diverged: bool = False
    ) -> dict[str, np.ndarray]:
        # A diverged member is frozen at its last finite point, which is no snapshot of a
        # converged cycle: report NaN rather than numbers that look meaningful.
        if diverged:
            return _nan_measurements(points.shape[0])
        # Every set is measured the same way: on the test split, BatchNorm from train inputs.
        return measure_snapshots(
            run.space,
            points,
            x_test,
            y_test,
            bn_x=x_train,
            bn_batch_size=cfg.bn_batch_size,
            origin=origin,
        )

    t0 = time.perf_counter()
    per_lr = [
        measure(run.snapshots[k], run.start, bool(run.diverged[k])) for k in range(len(cfg.lr_max))
    ]
    start_acc = measure(run.start.reshape(1, -1), None)["snapshot_acc"][0]
    arrays: dict[str, np.ndarray] = {
        "lr_max": np.asarray(cfg.lr_max, dtype=np.float64),
        "snapshot_steps": np.asarray(run.snapshot_steps, dtype=np.int64),
        "start_test_acc": np.asarray(start_acc),
        "diverged": run.diverged.cpu().numpy(),
    }
    for key in per_lr[0]:
        arrays[key] = np.stack([m[key] for m in per_lr])
    timings["measure"] = time.perf_counter() - t0

    if cfg.independent_members:
        say("ensembles: independent-run baseline")
        t0 = time.perf_counter()
        budget = cfg.warmup_epochs + math.ceil(cfg.cycles * cfg.cycle_epochs)
        independent = train_population(
            model,
            data,
            members=cfg.independent_members,
            epochs=budget,
            lr=cfg.independent_lr,
            schedule=ScheduleConfig(kind="cosine", min_factor=0.01),
            start="independent",
            seed=derive_seed(seed, "ensemble", "independent"),
            **train_kw,
        )
        measured = measure(independent.params, None, bool(independent.diverged.any()))
        arrays.update({f"independent/{k}": v for k, v in measured.items()})
        arrays["independent/diverged"] = independent.diverged.cpu().numpy()
        timings["independent"] = time.perf_counter() - t0

    if cfg.fge_cycles:
        say("ensembles: FGE baseline")
        t0 = time.perf_counter()
        fge = cyclic_snapshots(
            model,
            data,
            lr_max=[cfg.fge_lr_max],
            cycles=cfg.fge_cycles,
            cycle_epochs=cfg.fge_cycle_epochs,
            min_factor=cfg.fge_min_factor,
            start_params=run.start,
            seed=seed,
            purpose="fge",
            **train_kw,
        )
        assert fge.snapshots is not None
        measured = measure(fge.snapshots[0], run.start, bool(fge.diverged[0]))
        arrays.update({f"fge/{k}": v for k, v in measured.items()})
        arrays["fge/snapshot_steps"] = np.asarray(fge.snapshot_steps, dtype=np.int64)
        timings["fge"] = time.perf_counter() - t0

    meta = {
        "config": cfg.model_dump(),
        "seed": seed,
        "measured_on": measured_on,
        "n_measured": int(x_test.shape[0]),
        "n_train": int(x_train.shape[0]),
        "dim": run.space.dim,
        "model": type(model).__name__,
        "dataset": getattr(data, "name", type(data).__name__),
        "batchnorm": bool(norm_modules(model)),
        "cycle_steps": run.cycle_steps,
        "steps_per_epoch": run.steps_per_epoch,
        "seconds": timings,
    }
    return EnsembleResult(arrays=arrays, meta=meta)


# --------------------------------------------------------------------------- claims


def _setup_line(result: EnsembleResult) -> str:
    m, c = result.meta, result.meta["config"]
    return (
        f"{m['dataset']} ({m['n_train']} train, measured on {m['n_measured']} {m['measured_on']}"
        f" samples), {m['model']} (D={m['dim']}{', BatchNorm' if m['batchnorm'] else ''}); "
        f"{c['optimizer']} momentum {c['momentum']}, batch {c['batch_size']}; start trained "
        f"{c['warmup_epochs']} epochs ({c['warmup_schedule']}, LR {c['warmup_lr']}); "
        f"{c['cycles']} cosine-restart cycles of {c['cycle_epochs']} epochs down to "
        f"{c['min_factor']} x LR_max; seed {m['seed']}"
    )


def _row_means(values: np.ndarray) -> np.ndarray:
    """Mean of each row, NaN (without a warning) for a row that is all NaN (a diverged run)."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    sums = np.where(finite, values, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _strictly_increasing(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(np.diff(values) > 0))


def ensemble_claims(result: EnsembleResult) -> list[Claim]:
    """The claims ``wedge.ensemble_vs_swa`` and ``wedge.ensemble_baselines`` from ``result``."""
    a, cfg = result.arrays, result.meta["config"]
    sigmas = float(cfg["tie_sigmas"])
    lr = a["lr_max"]
    ensemble, single, swa_gap = a["ensemble_acc"], a["single_acc_last"], a["swa_minus_ensemble"]
    angle, dis = a["angle_mean"], a["disagreement_mean"]
    finite = bool(np.all(np.isfinite(ensemble)) and np.all(np.isfinite(single)))
    margin = sigmas * a["ensemble_minus_single_se"]
    beats_single = finite and bool(np.all(ensemble >= single - margin))
    beats_single_strict = finite and bool(np.all(ensemble >= single))
    gap_falls = bool(np.isfinite(swa_gap[[0, -1]]).all() and swa_gap[-1] < swa_gap[0])
    angle_rises = _strictly_increasing(angle)
    dis_rises = _strictly_increasing(dis)
    holds = beats_single and gap_falls and angle_rises if len(lr) > 1 else None
    setup = _setup_line(result)
    claims = [
        Claim(
            id="wedge.ensemble_vs_swa",
            statement=(
                "With a cyclic learning rate, snapshots taken at high LR_max land in different "
                "wedges: the prediction ensemble beats SWA and a single snapshot, SWA − "
                "ensemble grows more negative with LR_max, and the angle and label "
                "disagreement between successive snapshots grow with LR_max."
            ),
            paper_value=PAPER_TABLE,
            paper_setup="CIFAR-10 CNN, Adam, cyclic LR, 10 snapshots (paper §4.5, Fig 6)",
            measured={
                "lr_max": lr,
                "ensemble_acc": ensemble,
                "swa_acc": a["swa_acc"],
                "single_acc_last": single,
                "single_acc_mean": a["single_acc_mean"],
                "ensemble_minus_single": ensemble - single,
                "ensemble_minus_single_se": a["ensemble_minus_single_se"],
                "swa_minus_ensemble": swa_gap,
                "angle_deg": angle,
                "angle_from_start_deg": _row_means(a["successive_angle_from_origin"]),
                "disagreement": dis,
                "start_test_acc": a["start_test_acc"],
                "ensemble_ge_single": beats_single,
                "ensemble_ge_single_strict": beats_single_strict,
                "swa_gap_falls": gap_falls,
                "angle_increases": angle_rises,
                "disagreement_increases": dis_rises,
                "diverged": a["diverged"],
            },
            holds=holds,
            setup=setup,
            criterion=(
                f"holds iff (1) ensemble_acc >= single_acc_last - {sigmas:g} x se at every "
                "LR_max (single = the last snapshot; se = the standard error of the accuracy "
                "difference, paired over the test samples, so a shortfall of a few flipped "
                "samples counts as a tie), AND (2) swa_minus_ensemble at the highest LR_max < "
                "at the "
                "lowest, AND (3) the mean angle between successive snapshot weight vectors "
                "(from the origin) strictly increases with LR_max. Disagreement rising is "
                "reported, not required. Needs at least two LR_max values, else undecided."
            ),
            notes=(
                "Angles are between the weight vectors themselves (from the origin of weight "
                "space), the reading of the paper's 8°-60°; angles between displacements from "
                "the shared start are in angle_from_start_deg. Accuracies are on the "
                f"{result.meta['measured_on']} split. A diverged LR_max gives NaN and fails (1)."
            ),
        )
    ]
    claims.append(_baseline_claim(result, setup))
    return claims


def _baseline_claim(result: EnsembleResult, setup: str) -> Claim:
    a, cfg = result.arrays, result.meta["config"]
    has_ind, has_fge = "independent/ensemble_acc" in a, "fge/ensemble_acc" in a
    measured: dict[str, Any] = {
        "cyclic_lr_max": a["lr_max"],
        "cyclic_ensemble_acc": a["ensemble_acc"],
        "cyclic_pairwise_disagreement": a["pairwise_disagreement"],
        "cyclic_pairwise_angle_deg": a["pairwise_angle"],
    }
    for name, present in (("independent", has_ind), ("fge", has_fge)):
        if not present:
            continue
        for key in (
            "ensemble_acc",
            "single_acc_mean",
            "swa_acc",
            "pairwise_disagreement",
            "pairwise_angle",
            "disagreement_mean",
            "angle_mean",
        ):
            measured[f"{name}_{key}"] = a[f"{name}/{key}"]
    holds: bool | None = None
    if has_ind and has_fge:

        def highest(key: str) -> bool:
            mine = float(a[f"independent/{key}"])
            others = np.append(a[key], a[f"fge/{key}"])
            return bool(np.isfinite(mine) and np.all(mine > others[np.isfinite(others)]))

        most_disagreement, widest_angle = (
            highest("pairwise_disagreement"),
            highest("pairwise_angle"),
        )
        measured["independent_most_disagreement"] = most_disagreement
        measured["independent_widest_angle"] = widest_angle
        measured["independent_best_ensemble"] = bool(
            float(a["independent/ensemble_acc"])
            >= np.nanmax(np.append(a["ensemble_acc"], a["fge/ensemble_acc"]))
        )
        holds = most_disagreement and widest_angle
    return Claim(
        id="wedge.ensemble_baselines",
        statement=(
            "Independent-run ensembles and fast geometric ensembles (FGE) are the natural "
            "baselines for cyclic-LR snapshot ensembles; independent runs land in different "
            "modes and are the most diverse in function space (Fort, Hu & Lakshminarayanan "
            "2019)."
        ),
        paper_value=(
            "not measured in the paper (A7 names them as baselines); Fort et al. 2019: "
            "snapshots along one trajectory are less diverse than independent runs"
        ),
        paper_setup="Fort et al. 2019: CIFAR-10/100 ResNets and CNNs",
        measured=measured,
        holds=holds,
        setup=(
            f"{setup}; independent: {cfg['independent_members']} members from independent "
            f"inits, {cfg['warmup_epochs']} + {cfg['cycles']} x {cfg['cycle_epochs']} epochs "
            f"each, cosine from LR {cfg['independent_lr']}; FGE: {cfg['fge_cycles']} cycles "
            f"of {cfg['fge_cycle_epochs']} epochs at LR_max {cfg['fge_lr_max']} from the same "
            "start"
        ),
        criterion=(
            "holds iff the independent members are the most diverse set: their mean pairwise "
            "label disagreement AND their mean pairwise weight-vector angle are both higher "
            "than those of the FGE snapshots and of the snapshots of every non-diverged "
            "cyclic LR_max; undecided when a baseline was skipped. Whether the independent "
            "ensemble is also the most accurate is reported (independent_best_ensemble), not "
            "required"
        ),
        notes=(
            "Diversity is the mean over all pairs (independent members have no order). The "
            "independent ensemble costs independent_members times the training of one "
            "snapshot ensemble, so it is an upper reference, not a same-cost competitor."
        ),
    )


# --------------------------------------------------------------------------- figures


def ensemble_figures(result: EnsembleResult) -> dict[str, bytes]:
    """PNG figures of ``result``: accuracy and diversity vs LR_max, running ensembles."""
    from lossatlas.plots import figure_to_png
    from lossatlas.plots.ensembles import (
        plot_ensemble_accuracy,
        plot_ensemble_diversity,
        plot_running_ensemble,
    )

    a = result.arrays
    baselines_acc: dict[str, float] = {}
    baselines_div: dict[str, tuple[float, float]] = {}
    running: dict[str, np.ndarray] = {
        f"cyclic LR_max={lr:g}": a["running_ensemble_acc"][k] for k, lr in enumerate(a["lr_max"])
    }
    for name, label in (("independent", "independent runs"), ("fge", "FGE")):
        if f"{name}/ensemble_acc" in a:
            baselines_acc[f"{label} ensemble"] = float(a[f"{name}/ensemble_acc"])
            baselines_div[label] = (
                float(a[f"{name}/pairwise_angle"]),
                float(a[f"{name}/pairwise_disagreement"]),
            )
            running[label] = a[f"{name}/running_ensemble_acc"]
    return {
        "ensemble_accuracy.png": figure_to_png(
            plot_ensemble_accuracy(
                a["lr_max"],
                ensemble=a["ensemble_acc"],
                swa=a["swa_acc"],
                single_last=a["single_acc_last"],
                single_mean=a["single_acc_mean"],
                baselines=baselines_acc,
            )
        ),
        "ensemble_running.png": figure_to_png(plot_running_ensemble(running)),
        "ensemble_diversity.png": figure_to_png(
            plot_ensemble_diversity(
                a["lr_max"],
                angle=a["angle_mean"],
                disagreement=a["disagreement_mean"],
                pairwise_angle=a["pairwise_angle"],
                pairwise_disagreement=a["pairwise_disagreement"],
                baselines=baselines_div,
            )
        ),
    }


def run_ensembles(
    cfg: EnsembleConfig,
    model: nn.Module,
    dataset: Any,
    seed: int = 0,
    *,
    figures: bool = True,
    **kw: Any,
) -> EnsembleResult:
    """The whole A7 study: :func:`ensemble_experiment`, then its claims and figures.

    Args:
        cfg: every knob.
        model: the architecture; its current parameters are the start point.
        dataset: a lossatlas ``Dataset`` (or anything :func:`ensemble_experiment` takes).
        seed: root seed.
        figures: render the PNG figures (skip for speed in tests).
        kw: forwarded to :func:`ensemble_experiment` (``test_data``, ``start_params``,
            ``loss_fn``, ``progress``).

    Returns:
        an :class:`EnsembleResult` with ``arrays``, ``claims``, ``figures`` and ``meta``.
    """
    t0 = time.perf_counter()
    result = ensemble_experiment(model, dataset, cfg, seed=seed, **kw)
    result.claims = ensemble_claims(result)
    if figures:
        result.figures = ensemble_figures(result)
        ids = list(result.figures)
        result.claims = [replace(c, figures=[*c.figures, *ids]) for c in result.claims]
    result.meta["seconds"]["total"] = time.perf_counter() - t0
    return result
