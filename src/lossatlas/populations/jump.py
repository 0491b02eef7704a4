"""Jump and retrain (PAPERS.md B1): throw an optimum off in random directions and retrain.

From an optimum ``theta*`` (D,), each seed ``s`` draws one Gaussian direction ``d_s`` (D,),
filter-normalised against ``theta*`` (Li et al. 2018: every filter of a tensor with more than one
dimension gets the norm of the matching filter of ``theta*``; biases and BatchNorm parameters get
a zero direction). Each size ``a`` gives a start ``theta* + a * d_s``, so the jumps of one seed lie
on one ray. Every start is retrained with a fresh SGD (constant LR 0.001, momentum 0.9, weight
decay 1e-4, batch 128, 40 epochs by default), and the point right after the jump plus the point
after every epoch are kept, with train/val/test loss and accuracy at each.

Choices, and why:

* **One population.** All ``M = len(sizes) * len(seeds)`` jumps are retrained as ONE population
  in lock-step (:func:`~lossatlas.populations.train.fit_members`, one ``vmap`` over members),
  not 16 loops.
* **Member order is seed-major**: member ``m`` has seed ``seeds[m // J]`` and size
  ``sizes[m % J]`` (``J = len(sizes)``), so the jumps of one ray are contiguous (a unit of
  ``len(sizes)`` jumps is one ray).
* **The seed fixes the data order.** ``fit_members`` draws member ``k``'s order from
  ``(plan seed, "order", member_ids[k], epoch)``. We pass the jump *seed* as the member id, so the
  jumps that share a seed share their data order (and augmentation), whatever their size and
  whichever unit of work runs them; different seeds get different orders. ``member_ids`` need not
  be unique in ``fit_members`` (they only name seed streams); the global jump index is kept in
  :attr:`JumpRun.member`. The plan seed is ``derive_seed(base_seed, "jump", "retrain")``, so the
  retraining orders are not the orders the optimum itself was trained with. Deviation: models with
  dropout draw their masks from one stream per population (``fit_members`` seeds it from the first
  member id), so with dropout two jumps of one seed see the same batches but not the same masks.
* **BatchNorm statistics** (``bn_policy``): ``"keep"`` (the paper) starts every jump with the
  optimum's running statistics, unchanged by the jump, so the point right after the jump is
  evaluated with them; ``"recompute"`` resets and recomputes them on the training inputs at every
  jump point first (cumulative average over batches of ``bn_batch_size``, as SWA does), which
  measures the jump point as the network it is rather than with statistics of another point. In
  both cases retraining then updates the statistics as ordinary training does.
* **Snapshots are aligned with metrics.** Snapshot ``t`` of member ``k`` and every metric at
  ``[k, t]`` describe the same point: snapshot 0 is the jump point, evaluated before any step (the
  released code's losses were shifted by one sample; :func:`jump_stage_arrays` rows carry their
  own sample index, and the tests recompute a stored loss from its stored point).
* **Streaming.** ``on_snapshot`` receives every snapshot as it is taken, and the store runner
  writes it straight into a preallocated ``(M*T, D)`` array, so ``M x T x D`` (3.8 GB in the
  paper) never has to be in memory and is never built by repeated appends.

The store runner (:func:`lossatlas.stages.jumps.run_jumps_to_store`) streams the snapshots
into the atlas store; its layout is described there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from lossatlas.batchnorm import norm_modules, recompute_bn
from lossatlas.config import StrictModel
from lossatlas.data.adapter import training_batches
from lossatlas.data.batches import Batch, BatchAdapter, resolve_adapter
from lossatlas.evaluate import LossFn, evaluate_points
from lossatlas.optim import HyperParams
from lossatlas.params import ParamSpace
from lossatlas.populations.train import SnapshotFn, TrainPlan, fit_members
from lossatlas.seeding import derive_seed, make_generator

__all__ = [
    "JumpOptions",
    "JumpRun",
    "jump_and_retrain",
    "jump_columns",
    "jump_directions",
    "jump_stage_arrays",
    "jump_starts",
]

Split = tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------- options


class JumpOptions(StrictModel):
    """Jump-and-retrain settings; the defaults are the paper's (PAPERS.md B1)."""

    sizes: list[float] = Field(
        [0.25, 0.5, 0.75, 1.0],
        min_length=1,
        description="jump sizes, as multiples of the filter-normalised direction",
    )
    seeds: list[int] = Field(
        [0, 1, 2, 3], min_length=1, description="one direction and one data order per seed"
    )
    epochs: int = Field(40, ge=1, description="retraining epochs")
    lr: float = Field(0.001, gt=0.0, description="constant retraining LR")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(128, gt=0)
    snapshot_every: int = Field(1, ge=1, description="keep a snapshot every N epochs or steps")
    snapshot_unit: Literal["epoch", "step"] = Field(
        "epoch", description="unit of snapshot_every; 'step' needs a model without buffers"
    )
    bn_policy: Literal["keep", "recompute"] = Field(
        "keep",
        description="BatchNorm statistics at the jump point: keep the optimum's (paper) or "
        "recompute them on the training inputs",
    )
    bn_batch_size: int = Field(1024, gt=0, description="batch size of the BN recompute")
    eval_batch_size: int = Field(2048, gt=0, description="samples per evaluation pass")
    jumps_per_unit: int = Field(16, ge=1, description="jumps per unit of work in the store")

    @field_validator("sizes")
    @classmethod
    def _finite_sizes(cls, values: list[float]) -> list[float]:
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError("jump sizes must be finite and non-negative")
        return values

    @property
    def members(self) -> int:
        """``M = len(sizes) * len(seeds)``."""
        return len(self.sizes) * len(self.seeds)

    def snapshot_count(self, steps_per_epoch: int) -> int:
        """``T``: snapshots per jump, the jump point included."""
        total = self.epochs if self.snapshot_unit == "epoch" else self.epochs * steps_per_epoch
        return total // self.snapshot_every + 1

    def member_size(self, member: int) -> float:
        """The jump size of global member ``member`` (seed-major order)."""
        return self.sizes[member % len(self.sizes)]

    def member_seed(self, member: int) -> int:
        """The seed of global member ``member`` (seed-major order)."""
        return self.seeds[member // len(self.sizes)]


# --------------------------------------------------------------------------- directions


def jump_directions(
    space: ParamSpace, center: torch.Tensor, seeds: Sequence[int], *, base_seed: int
) -> torch.Tensor:
    """Filter-normalised Gaussian jump directions, one per seed: ``(S, D)``.

    Direction ``i`` is drawn from ``make_generator(base_seed, "jump", seeds[i])`` (on the CPU,
    then moved, so it is the same on any device) and filter-normalised against ``center`` (D,):
    each filter ``d_i <- d_i * |w_i| / (|d_i| + 1e-10)``; 1-D tensors (biases, BatchNorm
    weights) get 0. It depends only on the seed, never on the sizes or on which unit draws it.
    """
    rows = [
        space.random_direction(make_generator(base_seed, "jump", int(s)), center=center)
        for s in seeds
    ]
    return torch.stack(rows) if rows else center.new_zeros(0, space.dim)


def jump_starts(
    center: torch.Tensor,
    directions: torch.Tensor,
    sizes: Sequence[float],
    seeds: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The jump points, seed-major: ``starts[i * J + j] = center + sizes[j] * directions[i]``.

    Args:
        center: ``(D,)`` the optimum.
        directions: ``(S, D)``, one per seed.
        sizes: the ``J`` jump sizes.
        seeds: the seed of each direction, for ``seed_of`` (default: the direction index).

    Returns:
        ``starts`` (S*J, D), ``size_of`` (S*J,) float64, ``seed_of`` (S*J,) int64.
    """
    n_dirs, n_sizes = directions.shape[0], len(sizes)
    size = torch.tensor([float(a) for a in sizes], dtype=torch.float64)
    labels = torch.arange(n_dirs) if seeds is None else torch.tensor([int(s) for s in seeds])
    if labels.numel() != n_dirs:
        raise ValueError(f"{labels.numel()} seeds for {n_dirs} directions")
    # (S, 1, D) * (1, J, 1) -> (S, J, D): a jump of size a moves exactly a * d from the centre.
    scale = size.to(device=directions.device, dtype=directions.dtype).reshape(1, n_sizes, 1)
    starts = center.reshape(1, 1, -1) + directions.unsqueeze(1) * scale
    size_of = size.repeat(n_dirs)
    seed_of = labels.to(torch.int64).repeat_interleave(n_sizes)
    return starts.reshape(n_dirs * n_sizes, -1), size_of, seed_of


# --------------------------------------------------------------------------- retraining


@dataclass
class JumpRun:
    """The jumps and their retraining trajectories (``M`` jumps, ``T`` snapshots each).

    Attributes:
        space: flat-vector view of the model.
        center: ``(D,)`` the optimum jumped from.
        member: ``(M,)`` global jump index (seed-major: ``seed index * len(sizes) + size
            index``); ``0..M-1`` unless a subset was run.
        size: ``(M,)`` float64 jump size.
        seed: ``(M,)`` int64 seed (direction and data order).
        starts: ``(M, D)`` the jump points.
        snapshots: ``(M, T, D)``; ``[:, 0]`` are the jump points. ``None`` when streamed.
        snapshot_steps: ``(T,)`` optimiser step of each snapshot (0 = right after the jump).
        epoch: ``(T,)`` float64 epoch of each snapshot (``step / steps_per_epoch``).
        history: ``"{split}_{loss,acc}"`` -> ``(M, T)``: column ``t`` is measured at snapshot
            ``t`` (with that point's BatchNorm statistics); NaN once a member diverged.
        distance: ``(M, T)`` float64, L2 distance of each snapshot from ``center``.
        final: ``(M, D)`` parameters after the last epoch.
        start_buffers: name -> ``(M, *shape)`` buffers at the jump points (after ``bn_policy``).
        buffers: name -> ``(M, *shape)`` buffers after the last epoch.
        diverged: ``(M,)`` bool.
        steps_per_epoch: optimiser steps per epoch.
        options: the settings used.
    """

    space: ParamSpace
    center: torch.Tensor
    member: torch.Tensor
    size: torch.Tensor
    seed: torch.Tensor
    starts: torch.Tensor
    snapshots: torch.Tensor | None
    snapshot_steps: list[int]
    epoch: torch.Tensor
    history: dict[str, torch.Tensor]
    distance: torch.Tensor
    final: torch.Tensor
    start_buffers: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    diverged: torch.Tensor
    steps_per_epoch: int
    options: JumpOptions

    @property
    def members(self) -> int:
        return int(self.member.numel())

    @property
    def snapshot_count(self) -> int:
        return len(self.snapshot_steps)


def jump_and_retrain(
    model: nn.Module,
    data: Any,
    center: torch.Tensor | None = None,
    *,
    options: JumpOptions | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    base_seed: int = 0,
    on_snapshot: SnapshotFn | None = None,
    keep_snapshots: bool | None = None,
    members: Sequence[int] | None = None,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
) -> JumpRun:
    """Jump from ``center`` along ``len(seeds)`` rays by every size and retrain, as ONE population.

    Args:
        model: any ``nn.Module`` (a template; its parameters are not changed).
        data: an ``(X, y)`` pair, a ``DataLoader`` (of ``(x, y)`` or dict batches) or a
            lossatlas ``Dataset`` (then train, val and test metrics are recorded; otherwise
            train only), as in :func:`~lossatlas.populations.train.train_population`.
        center: ``(D,)`` the optimum (default: the model's current parameters).
        options: sizes, seeds, retraining and snapshot settings (:class:`JumpOptions`).
        buffers: the optimum's buffers, name -> tensor (default: the module's own).
        base_seed: root of the direction (``(base_seed, "jump", seed)``) and data-order seeds.
        on_snapshot: ``on_snapshot(t, step, params (M, D))`` at every snapshot, ``t`` counting
            from 0 (the jump point); ``params`` is live, copy what you keep.
        keep_snapshots: keep ``(M, T, D)`` in memory (default: only without ``on_snapshot``).
        members: run only these global jump indices (each unit of the store runner does);
            a member's numbers do not depend on which others run beside it.
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.
        adapter: how to read batches and score outputs
            (:class:`~lossatlas.data.batches.BatchAdapter`).

    Returns:
        A :class:`JumpRun` with ``M = len(members)`` rows.
    """
    opts = options or JumpOptions()
    train, splits = training_batches(data, resolve_adapter(adapter, loss_fn))
    space = ParamSpace(model)
    point = space.flatten() if center is None else center.detach()
    point = point.to(device=train.device, dtype=train.input_dtype or point.dtype)
    ids = list(range(opts.members)) if members is None else [int(m) for m in members]
    if not ids or any(not 0 <= m < opts.members for m in ids):
        raise ValueError(f"members must be a non-empty subset of 0..{opts.members - 1}")
    steps_per_epoch = math.ceil(train.size / opts.batch_size)
    if opts.snapshot_unit == "step" and space.buffer_names:
        # fit_members reports epoch-end metrics only; mid-epoch snapshots are evaluated here,
        # which needs the running buffers at that step, and those are not exposed.
        raise ValueError(
            "snapshot_unit='step' needs a model without buffers (BatchNorm statistics at "
            "mid-epoch steps are not available); use snapshot_unit='epoch'"
        )

    # Directions only for the seeds this call needs: a direction depends on its seed alone.
    seed_of = torch.tensor([opts.member_seed(m) for m in ids], dtype=torch.int64)
    size_of = torch.tensor([opts.member_size(m) for m in ids], dtype=torch.float64)
    needed = sorted(set(seed_of.tolist()))
    directions = jump_directions(space, point, needed, base_seed=base_seed)
    row = {s: i for i, s in enumerate(needed)}
    scale = size_of.to(device=point.device, dtype=point.dtype).reshape(-1, 1)
    starts = point + directions[[row[int(s)] for s in seed_of]] * scale  # (M, D)
    start_buffers = _start_buffers(space, starts, buffers, train, opts)

    count = opts.snapshot_count(steps_per_epoch)
    keep = on_snapshot is None if keep_snapshots is None else keep_snapshots
    # Preallocated once: snapshots are copied into place, never collected by appends.
    kept = starts.new_empty(len(ids), count, space.dim) if keep else None
    distance = torch.full((len(ids), count), math.nan, dtype=torch.float64)
    step_metrics: dict[str, torch.Tensor] = {}
    steps: list[int] = []

    def take(index: int, step: int, params: torch.Tensor) -> None:
        distance[:, index] = (params.double() - point.double()).norm(dim=1).cpu()
        if opts.snapshot_unit == "step":
            for name, values in _evaluate(space, params, splits, opts).items():
                step_metrics.setdefault(name, torch.full((len(ids), count), math.nan))
                step_metrics[name][:, index] = values.cpu()
        if kept is not None:
            kept[:, index] = params
        if on_snapshot is not None:
            on_snapshot(index, step, params)
        steps.append(step)

    plan = TrainPlan(
        epochs=opts.epochs,
        batch_size=opts.batch_size,
        optimizer="sgd",
        # Not the optimum's own training seed: retraining orders are a fresh draw.
        seed=derive_seed(base_seed, "jump", "retrain"),
        snapshot_every=opts.snapshot_every,
        snapshot_unit=opts.snapshot_unit,
        eval_batch_size=opts.eval_batch_size,
    )
    hp = HyperParams.build(
        starts, lr=opts.lr, weight_decay=opts.weight_decay, momentum=opts.momentum
    )
    population = fit_members(
        space,
        starts,
        train,
        plan=plan,
        hp=hp,
        # The seed, not the jump index, names each member's order stream: jumps of one seed
        # share their data order (see the module docstring).
        member_ids=seed_of,
        eval_splits=splits,
        loss_fn=loss_fn,
        buffers=start_buffers,
        on_snapshot=take,
    )
    if len(steps) != count:  # guards the T formula that the store layout relies on
        raise RuntimeError(f"expected {count} snapshots, the population took {len(steps)}")
    if opts.snapshot_unit == "epoch":
        # history column e is measured after epoch e (0 = before training); snapshot t is taken
        # after epoch t * every, so these columns describe exactly the snapshotted points.
        history = {n: v[:, :: opts.snapshot_every].clone() for n, v in population.history.items()}
    else:
        dead = population.diverged.reshape(-1, 1)
        history = {n: torch.where(dead, math.nan, v) for n, v in step_metrics.items()}
    return JumpRun(
        space=space,
        center=point,
        member=torch.tensor(ids, dtype=torch.int64),
        size=size_of,
        seed=seed_of,
        starts=starts,
        snapshots=kept,
        snapshot_steps=steps,
        epoch=torch.tensor(steps, dtype=torch.float64) / steps_per_epoch,
        history=history,
        distance=distance,
        final=population.params,
        start_buffers=start_buffers,
        buffers=population.buffers,
        diverged=population.diverged,
        steps_per_epoch=steps_per_epoch,
        options=opts,
    )


def _start_buffers(
    space: ParamSpace,
    starts: torch.Tensor,
    buffers: Mapping[str, torch.Tensor] | None,
    train: Batch,
    opts: JumpOptions,
) -> dict[str, torch.Tensor]:
    """Buffers at the jump points, name -> ``(M, *shape)``, following ``opts.bn_policy``."""
    source = space.buffers() if buffers is None else {n: b.detach() for n, b in buffers.items()}
    missing = set(space.buffer_names) - set(source)
    if missing:
        raise ValueError(f"buffers lack {sorted(missing)}")
    members = starts.shape[0]
    out = {
        n: source[n].to(starts.device).unsqueeze(0).repeat(members, *[1] * source[n].dim())
        for n in space.buffer_names
    }
    norms = norm_modules(space.model)
    if opts.bn_policy == "recompute" and norms:
        if len(train.args) != 1 or train.kwargs or not isinstance(train.args[0], torch.Tensor):
            raise ValueError(
                "bn_policy='recompute' needs data whose batches have one input tensor, "
                "such as (X, y); use bn_policy='keep'"
            )
        x_train = train.args[0]
        fresh = recompute_bn(space, starts, x_train, batch_size=opts.bn_batch_size)
        for prefix in norms:
            for stat in ("running_mean", "running_var", "num_batches_tracked"):
                name = f"{prefix}.{stat}"
                out[name] = fresh[name].to(out[name].device)
    return out


def _evaluate(
    space: ParamSpace,
    params: torch.Tensor,
    splits: Mapping[str, Batch],
    opts: JumpOptions,
) -> dict[str, torch.Tensor]:
    """Metrics of ``params`` (M, D) on every split (a model without buffers)."""
    out: dict[str, torch.Tensor] = {}
    for split, batch in splits.items():
        loss, acc = evaluate_points(space, params, batch, sample_chunk=opts.eval_batch_size)
        out[f"{split}_loss"], out[f"{split}_acc"] = loss, acc
    return out


# --------------------------------------------------------------------------- sample matrix


def jump_stage_arrays(run: JumpRun) -> dict[str, np.ndarray]:
    """The run as a sample matrix plus per-sample columns, rows member-major then snapshot.

    Row ``r = k * T + t`` is snapshot ``t`` of the run's ``k``-th member, and every column at
    row ``r`` describes that same point (the metrics are not shifted by one sample).

    Returns:
        ``samples`` (M*T, D) float32; ``sample`` (M*T,) row index; ``member`` (global jump
        index), ``seed``, ``step`` int64; ``size``, ``epoch``, ``distance`` float64;
        ``{split}_{loss,acc}`` float64, all (M*T,).
    """
    if run.snapshots is None:
        raise ValueError("the snapshots were streamed, not kept; read them from the store")
    m, t = run.members, run.snapshot_count
    arrays: dict[str, np.ndarray] = {
        "samples": run.snapshots.detach().reshape(m * t, -1).float().cpu().numpy(),
        "sample": np.arange(m * t, dtype=np.int64),
    }
    arrays.update(jump_columns(run))
    return arrays


def jump_columns(run: JumpRun) -> dict[str, np.ndarray]:
    """The per-sample columns (M*T,) of :func:`jump_stage_arrays`, without the samples."""
    t = run.snapshot_count
    columns = {
        "member": run.member.numpy().repeat(t),
        "size": run.size.numpy().repeat(t),
        "seed": run.seed.numpy().repeat(t),
        "epoch": np.tile(run.epoch.numpy(), run.members),
        "step": np.tile(np.asarray(run.snapshot_steps, dtype=np.int64), run.members),
        "distance": run.distance.numpy().reshape(-1),
    }
    for name, values in run.history.items():
        columns[name] = values.double().numpy().reshape(-1)
    return columns
