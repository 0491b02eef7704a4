"""Cyclic-LR snapshots: one population member per peak LR, snapshots at every cycle end.

From a shared start (optionally trained first, the *warm-up*, as its own one-member run), a
cyclic LR (cosine restarts from ``LR_max`` down to ``min_factor * LR_max``) throws each member
into a new region at every restart and lets it settle at the cycle's end, where its snapshot is
taken. All members train in lock-step as ONE population
(:func:`~lossatlas.populations.train.train_population`). The wedge study's ensemble experiment
(:mod:`lossatlas.studies.wedges.ensemble`) measures prediction ensembles and SWA on these
snapshots; SWA's BatchNorm recompute is :func:`lossatlas.batchnorm.recompute_bn`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lossatlas.config import ScheduleConfig
from lossatlas.data.adapter import training_batches
from lossatlas.data.batches import BatchAdapter, resolve_adapter
from lossatlas.evaluate import LossFn
from lossatlas.params import ParamSpace
from lossatlas.populations.train import SnapshotFn, train_population
from lossatlas.seeding import derive_seed

__all__ = ["CyclicSnapshots", "cyclic_snapshots"]


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


def _train_size(data: Any, batch_size: int, adapter: BatchAdapter) -> int:
    return math.ceil(training_batches(data, adapter)[0].size / batch_size)


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
    adapter: BatchAdapter | None = None,
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
        data: ``(X, y)``, a ``DataLoader`` (of ``(x, y)`` or dict batches) or a lossatlas
            ``Dataset``, as in :func:`~lossatlas.populations.train.train_population`.
        lr_max: peak LR of each member.
        cycles: number of cycles, i.e. snapshots per member.
        cycle_epochs: epochs per cycle (fractions allowed: a cycle is
            ``round(cycle_epochs * steps_per_epoch)`` steps, as in the schedule).
        min_factor: LR at a cycle's end as a fraction of its ``LR_max``.
        optimizer, momentum, weight_decay, batch_size: as in
            :func:`~lossatlas.populations.train.train_population`; used by the warm-up too.
        warmup_epochs, warmup_lr, warmup_schedule: the warm-up run (0 epochs: none).
        start_params: ``(D,)`` start point (default: the model's current parameters).
        seed: root seed; the warm-up and the cycling draw their data orders from
            ``derive_seed(seed, "ensemble", ...)``.
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.
        adapter: how to read batches and score outputs
            (:class:`~lossatlas.data.batches.BatchAdapter`).
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
    # Settings shared by the warm-up and the cycling run (typed Any: they are keyword arguments
    # of train_population of several types).
    train_kw: dict[str, Any] = {
        "optimizer": optimizer,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "loss_fn": loss_fn,
        "adapter": adapter,
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
    steps_per_epoch = _train_size(data, batch_size, resolve_adapter(adapter, loss_fn))
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
