"""Train K members in lock-step: one stacked or vmapped step over members instead of K loops.

The loop below reads top to bottom: draw each member's batch from its own data order, take
every member's loss and gradient in one vectorised call, update the flat ``(K, D)`` parameters
with a functional optimiser, evaluate at each epoch end, and hand snapshots to a callback.

A member whose loss or gradient turns NaN or inf is marked diverged and frozen; the others go
on. Members are identified by their global index (``member_ids``), and every random draw is
seeded from ``(seed, purpose, member id, epoch)``, so a member trains identically whether it is
trained alone, with others, or in another unit of work.

Data is read through the batch interface of :mod:`lossatlas.data.batches`, as the probes read
it: ``(X, y)`` tensors, a ``DataLoader`` of ``(x, y)`` or of dict batches (HuggingFace style),
or anything a :class:`~lossatlas.data.batches.BatchAdapter` reads, with custom outputs and
losses. It is held in memory as one batch, since every member draws its own order; each step
takes every member's rows of every per-sample tensor (:meth:`Batch.rows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Literal

import torch
from torch import nn
from torch.func import grad_and_value, vmap

from lossatlas.config import ScheduleConfig, TrainConfig
from lossatlas.data.adapter import Split, training_batches
from lossatlas.data.batches import Batch, BatchAdapter, resolve_adapter
from lossatlas.evaluate import LossFn, evaluate_points, member_batch_loss_fn, member_loss_fn
from lossatlas.models import reinitialize
from lossatlas.models.stacked import NotTraceable, StackedProgram
from lossatlas.optim import HyperParams, make_optimizer, make_schedule
from lossatlas.params import ParamSpace
from lossatlas.seeding import derive_seed, make_generator
from lossatlas.threads import ThreadShares, even_shares, one_torch_thread, thread_count

__all__ = [
    "METRICS",
    "Engine",
    "Population",
    "SnapshotFn",
    "TrainPlan",
    "fit_members",
    "initial_points",
    "train_population",
]

Engine = Literal["auto", "stacked", "vmap"]
"""How a step is computed: ``stacked`` (traced common models), ``vmap`` (any module), ``auto``."""

SnapshotFn = Callable[[int, int, torch.Tensor], None]
"""``on_snapshot(index, step, params (K, D))``, called at every snapshot time."""

METRICS = ("loss", "acc")


@dataclass
class Population:
    """The result of training a population.

    Attributes:
        space: flat-vector view of the model.
        params: ``(K, D)`` final parameters.
        init: ``(K, D)`` starting parameters.
        buffers: name -> ``(K, *shape)`` final buffers (BatchNorm statistics).
        history: ``"{split}_{metric}"`` -> ``(K, epochs + 1)``; column 0 is before training.
        diverged: ``(K,)`` bool.
        member_ids: ``(K,)`` the members' seed-stream ids (init, data order, augmentation
            derive from these). Usually the global member index; ids may repeat when members
            should share a data order (jump-and-retrain shares one order per seed).
        snapshots: ``(K, S, D)`` when snapshots were kept in memory, else ``None``.
        snapshot_steps: the optimiser step of each snapshot, ``(S,)``.
        stopped_at: ``(K,)`` the epoch after which each member stopped because ``stop_when``
            said so (``-1``: it trained to the end), when ``fit_members`` had a ``stop_when``.
    """

    space: ParamSpace
    params: torch.Tensor
    init: torch.Tensor
    buffers: dict[str, torch.Tensor]
    history: dict[str, torch.Tensor]
    diverged: torch.Tensor
    member_ids: torch.Tensor
    snapshots: torch.Tensor | None = None
    snapshot_steps: list[int] = field(default_factory=list)
    stopped_at: torch.Tensor | None = None

    @property
    def members(self) -> int:
        return self.params.shape[0]

    def member(self, k: int) -> nn.Module:
        """Load member ``k``'s parameters and buffers into the template model and return it."""
        self.space.load(self.params[k], {n: b[k] for n, b in self.buffers.items()})
        return self.space.model


@dataclass(frozen=True)
class TrainPlan:
    """Everything about *how* to train, independent of which members."""

    epochs: int
    batch_size: int = 128
    optimizer: str = "sgd"
    nesterov: bool = False
    beta2: float = 0.999
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    seed: int = 0
    snapshot_every: int = 0
    snapshot_unit: Literal["epoch", "step"] = "epoch"
    eval_batch_size: int = 2048
    compile: bool = False

    @classmethod
    def from_config(cls, train: TrainConfig, *, seed: int, **overrides: Any) -> TrainPlan:
        """The plan of ``train``: every field of the same name, then ``overrides`` on top.

        ``seed`` is the run's root seed, which lives on ``Config``, not on ``TrainConfig``.
        Fields are copied by name rather than listed, so a field added to both classes is
        carried without touching this; one added to the plan alone fails here, loudly.
        """
        values = {f.name: getattr(train, f.name) for f in fields(cls) if f.name != "seed"}
        return cls(**{**values, "seed": seed, **overrides})


# --------------------------------------------------------------------------- public entry


def train_population(
    model: nn.Module,
    data: Any,
    *,
    members: int,
    epochs: int,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float | Sequence[float] = 0.05,
    momentum: float | Sequence[float] = 0.9,
    weight_decay: float | Sequence[float] = 0.0,
    seed: int = 0,
    nesterov: bool = False,
    schedule: ScheduleConfig | None = None,
    start: Literal["independent", "shared"] = "independent",
    start_params: torch.Tensor | None = None,
    eval_data: Mapping[str, Split] | None = None,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    snapshot_every: int = 0,
    snapshot_unit: Literal["epoch", "step"] = "epoch",
    on_snapshot: SnapshotFn | None = None,
    on_epoch: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    compile: bool = False,
    engine: Engine = "auto",
) -> Population:
    """Train ``members`` copies of ``model`` in lock-step (stacked or vmapped steps).

    Args:
        model: any ``nn.Module``; it is used as a template and its parameters are the shared
            start point when ``start="shared"``.
        data: training data: an ``(X, y)`` pair of tensors, a ``DataLoader`` (or any
            re-iterable) of ``(x, y)`` or dict batches (``{"input_ids": ..., "labels": ...}``:
            ``labels`` is the target, the other keys the forward's keyword arguments), or a
            lossatlas ``Dataset`` (then train/val/test metrics are all recorded). A loader is
            read once into memory, since every member needs its own order.
        members: population size K.
        epochs: passes over the training data.
        lr, momentum, weight_decay: a scalar, or one value per member.
        optimizer: ``sgd`` (``nesterov`` optional), ``adam`` or ``adamw``.
        seed: root seed; member ``k`` draws its init, data order and augmentation from
            ``(seed, purpose, k, ...)``.
        schedule: LR schedule (constant by default).
        start: ``independent`` (a fresh init per member) or ``shared`` (all members start
            from ``start_params``, default the model's current parameters).
        start_params: ``(D,)`` shared start, or ``(K, D)`` explicit per-member starts.
        eval_data: extra named splits to record every epoch: ``(X, y)`` tensors or anything
            ``data`` may be (read with ``adapter``).
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default (an adapter's own
            ``loss``/``loss_fn`` takes precedence).
        adapter: how to read batches, call the model and score its output
            (:class:`~lossatlas.data.batches.BatchAdapter`: several inputs, dict or
            ``ModelOutput`` outputs, ``loss(outputs, batch)``, ``accuracy=None``). A regression
            target (floating point) records no accuracy: its history is NaN.
        augment: ``augment(x_batch, generator)`` applied to each member's batch (``(X, y)``
            data only).
        snapshot_every: keep the parameters every N epochs/steps (``snapshot_unit``); the
            start point is snapshot 0. Kept in memory unless ``on_snapshot`` streams them.
        compile: ``torch.compile`` the vectorised step (pays off on long runs).
        engine: see :func:`fit_members`.

    Returns:
        A :class:`Population`; ``.params`` has shape ``(members, D)``.
    """
    reader = resolve_adapter(adapter, loss_fn)
    train, splits = training_batches(data, reader)
    for name, split in (eval_data or {}).items():
        splits[name] = training_batches(split, reader)[0]
    space = ParamSpace(model)
    init = initial_points(space, members, seed=seed, start=start, start_params=start_params)
    init = init.to(device=train.device, dtype=train.input_dtype)
    plan = TrainPlan(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        nesterov=nesterov,
        schedule=schedule or ScheduleConfig(),
        seed=seed,
        snapshot_every=snapshot_every,
        snapshot_unit=snapshot_unit,
        compile=compile,
    )
    hp = HyperParams.build(init, lr=lr, weight_decay=weight_decay, momentum=momentum)
    kept: list[torch.Tensor] = []
    callback = on_snapshot or (lambda index, step, params: kept.append(params.clone()))
    population = fit_members(
        space,
        init,
        train,
        plan=plan,
        hp=hp,
        member_ids=torch.arange(members),
        eval_splits=splits,
        loss_fn=loss_fn,
        augment=augment,
        on_snapshot=callback,
        on_epoch=on_epoch,
        engine=engine,
    )
    if kept:
        population.snapshots = torch.stack(kept, dim=1)
    return population


def initial_points(
    space: ParamSpace,
    members: int,
    *,
    seed: int,
    start: Literal["independent", "shared"] = "independent",
    start_params: torch.Tensor | None = None,
    member_ids: Iterable[int] | None = None,
) -> torch.Tensor:
    """Starting points ``(K, D)``: fresh seeded inits, or copies of one shared point."""
    ids = list(range(members)) if member_ids is None else list(member_ids)
    if start_params is not None:
        if start_params.dim() == 2:
            if start_params.shape[0] != members:
                raise ValueError(
                    f"start_params has {start_params.shape[0]} rows for {members} members"
                )
            return start_params.detach().clone()
        return start_params.detach().reshape(1, -1).repeat(members, 1)
    if start == "shared":
        return space.flatten().reshape(1, -1).repeat(members, 1)
    saved = space.flatten()
    points = []
    for member in ids:
        reinitialize(space.model, derive_seed(seed, "init", member))
        points.append(space.flatten())
    space.load(saved)  # leave the user's module as we found it
    return torch.stack(points)


# --------------------------------------------------------------------------- the loop


def fit_members(
    space: ParamSpace,
    init: torch.Tensor,
    x_train: torch.Tensor | Batch,
    y_train: torch.Tensor | None = None,
    *,
    plan: TrainPlan,
    hp: HyperParams,
    member_ids: torch.Tensor,
    eval_splits: Mapping[str, Split | Batch],
    loss_fn: LossFn | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    on_snapshot: SnapshotFn | None = None,
    on_epoch: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    grad_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stop_when: Callable[[int, dict[str, torch.Tensor]], torch.Tensor] | None = None,
    engine: Engine = "auto",
) -> Population:
    """Train the members whose start points are ``init`` (K, D). The library's one loop.

    The training data is ``x_train`` (N, *input) with targets ``y_train`` (N,), or ``x_train``
    an in-memory :class:`~lossatlas.data.batches.Batch` (any structure its adapter reads;
    ``y_train`` is then not given; see :func:`~lossatlas.data.adapter.training_batches`).
    ``eval_splits`` map names to ``(X, y)`` tensors or batches; tensors are read with the
    training batch's adapter. ``member_ids`` (K,) are the members' global indices;
    ``buffers`` (name -> (K, *shape)) default to copies of the template's buffers.
    ``grad_transform`` maps the gradients (K, D) -> (K, D) before the optimiser sees them:
    constrained optimisation (tunnels, m-connectors) projects them onto a subspace there.
    Weight decay is added inside the optimiser, after the projection, so constrained runs
    should use ``weight_decay=0``.

    ``stop_when(epoch, metrics) -> (K,) bool`` is asked after every epoch (with that epoch's
    evaluation): a member it marks is frozen from then on (it has converged), and training ends
    early once every member is frozen or diverged; ``plan.epochs`` is then a cap. The epoch at
    which each member stopped is ``Population.stopped_at``; later history columns stay NaN.

    ``engine`` chooses how a step's losses and gradients are computed. ``"stacked"``: the
    model traced into a :class:`~lossatlas.models.stacked.StackedProgram` (Linear and Conv1d
    as batched matmuls, convolutions by im2col, hand-written backward, gradients into one
    reused ``(K, D)`` buffer); it raises ``ValueError`` for a model it cannot trace.
    ``"vmap"``: ``torch.func.vmap`` over members, for any ``nn.Module`` (and
    ``plan.compile``). ``"auto"``: stacked when the model traces and the plan does not
    compile, else vmap. Both compute the same numbers up to rounding.

    The default is ``"auto"``. Neither engine's numbers depend on the torch thread count, so
    a run on Ray workers or the process pool (one thread each) gives the driver's numbers bit
    for bit: vmap's do not, and the stacked engine runs each share of the members on a Python
    thread of one torch thread (one share per torch thread), so each member is computed on
    one thread whatever the count. On 2 cores it is about 2x the vmap step for cnn1d (12
    members: 7.0 against 15.2 ms). It runs on ``(X, y)`` tensors read by the default rules
    only (``auto`` then picks vmap).
    """
    train = _training_batch(x_train, y_train, loss_fn)
    adapter = train.adapter
    splits = {
        name: (
            _training_batch(split, None, loss_fn)
            if isinstance(split, Batch)
            else Batch.read((split[0], split[1]), adapter)
        )
        for name, split in eval_splits.items()
    }
    pairs = train.reads_pairs
    if augment is not None and not pairs:
        raise ValueError("augment needs (X, y) tensor data read by the default rules")
    params = init.clone()
    members, n_train = params.shape[0], train.size
    if buffers is None:
        buffers = {
            n: b.unsqueeze(0).repeat(members, *[1] * b.dim()).to(params.device)
            for n, b in space.model.named_buffers()
        }
    buffers = {n: b.clone() for n, b in buffers.items()}
    steps_per_epoch = math.ceil(n_train / plan.batch_size)
    schedule = make_schedule(plan.schedule, steps_per_epoch, plan.epochs)
    optimizer = make_optimizer(plan.optimizer, nesterov=plan.nesterov, beta2=plan.beta2)
    state = optimizer.init_state(params)
    program = _stacked_program(space, adapter.loss_fn, plan.compile, engine, pairs)
    shares = _member_shares(members, params.device)
    # A step is `advance(part)` for parts of the members. On the stacked engine each share of
    # the members advances on a Python thread of its own (one torch thread each): its rows,
    # its program's step, its finiteness check and its optimiser update, all row-wise, so a
    # member's numbers never depend on how the members are shared out. A grad_transform sees
    # every member at once, so then only the program's step is shared out (_stacked_step).
    threaded = program is not None and len(shares) > 1 and grad_transform is None
    parts = shares if threaded else [slice(None)]
    step_fns: list[Callable[..., tuple[torch.Tensor, torch.Tensor]]]
    if threaded:
        step_fns = [_program_step(StackedProgram(space, adapter.loss_fn)) for _ in parts]
    elif program is not None:
        step_fns = [_stacked_step(space, adapter.loss_fn, shares)]
    elif pairs:
        step_fns = [_vectorised_step(space, member_loss_fn(space, adapter.loss_fn), plan.compile)]
    else:
        step_fns = [
            _vectorised_step(
                space, member_batch_loss_fn(space, adapter), plan.compile, train.member_dims()
            )
        ]
    runner = ThreadShares(len(parts))
    # Each share evaluates its own members too, on a copy of the model (evaluate_points
    # loads points into the module it is given).
    spaces = [space] + [space.replica() for _ in parts[1:]]
    # On the stacked engine the main thread between the shares' work stays at one torch
    # thread: on two, its OpenMP workers spin-wait after every small op and take a core
    # from the shares (a step of 16 MLP members took 3.9 ms that way, 2.3 ms without).
    step_threads = one_torch_thread if program is not None and len(shares) > 1 else nullcontext
    active = torch.ones(members, 1, dtype=torch.bool, device=params.device)
    done = torch.zeros(members, 1, dtype=torch.bool, device=params.device)
    stopped_at = torch.full((members,), -1, dtype=torch.int64)
    history = {
        f"{s}_{m}": torch.full((members, plan.epochs + 1), float("nan"))
        for s in splits
        for m in METRICS
    }
    snapshot_steps: list[int] = []

    # Views of every per-member tensor for each part (rows of contiguous tensors).
    part_state = [{k: v[part] for k, v in state.items()} for part in parts]
    part_hp = [hp.select(part) for part in parts]
    part_ids = [member_ids[part] for part in parts]

    def advance(i: int, index: torch.Tensor, step: int, lr_factor: float) -> None:
        """One optimiser step of the members ``parts[i]``, their batches ``index[parts[i]]``."""
        part = parts[i]
        rows = train.rows(index[part])  # every per-sample tensor as (k, B, ...)
        if pairs:
            xb, yb = rows  # (k, B, *input), (k, B)
            if augment is not None:
                xb = torch.stack(
                    [
                        augment(xb[k], make_generator(plan.seed, "augment", int(m), step))
                        for k, m in enumerate(part_ids[i])
                    ]
                )
            losses, grads = step_fns[i](params[part], buffers, xb, yb)
        else:
            losses, grads = step_fns[i](params[part], buffers, rows)
        # One reduction catches NaN/inf anywhere in a member's gradient.
        finite = torch.isfinite(losses) & torch.isfinite(grads.sum(dim=1))
        live = active[part]
        live.mul_(finite.reshape(-1, 1))
        if grad_transform is not None:
            grads = grad_transform(grads)
        moving = live & ~done[part]
        optimizer.step(params[part], grads, part_state[i], part_hp[i], lr_factor, moving)

    def advance_steps(i: int, orders: torch.Tensor, first: int, batches: list[int]) -> None:
        """Steps ``first, first + 1, ...`` of the members ``parts[i]``: the epoch's ``batches``
        of the data orders ``orders`` (K, N)."""
        for offset, batch in enumerate(batches):
            index = orders[:, batch * plan.batch_size : (batch + 1) * plan.batch_size]
            advance(i, index, first + offset, schedule(first + offset))

    def record(epoch: int) -> dict[str, torch.Tensor]:
        # evaluate_points, not the stacked program, for either engine: its per-member passes
        # over whole chunks measured 1.3x (MLP) and 2.4x (cnn1d) faster on 2 CPU cores than
        # the stacked forward over all members at once.
        shared = runner.map(
            lambda i: _evaluate(
                spaces[i],
                params[parts[i]],
                {n: b[parts[i]] for n, b in buffers.items()},
                splits,
                plan.eval_batch_size,
            )
        )
        metrics = {name: torch.cat([m[name] for m in shared]) for name in shared[0]}
        if "train_loss" in metrics:  # a point that evaluates to NaN has diverged too
            active.mul_(torch.isfinite(metrics["train_loss"]).reshape(-1, 1))
        # A diverged member is frozen; its later metrics are NaN rather than stale numbers.
        dead = ~active.reshape(-1)
        for name, values in metrics.items():
            metrics[name] = torch.where(dead, float("nan"), values)
            history[name][:, epoch] = metrics[name].cpu()
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        return metrics

    def snapshot(step: int) -> None:
        if on_snapshot is not None:
            on_snapshot(len(snapshot_steps), step, params)
        snapshot_steps.append(step)

    record(0)
    snapshotting = plan.snapshot_every > 0
    if snapshotting:
        snapshot(0)
    step = 0
    for epoch in range(plan.epochs):
        # Each member has its own data order, drawn from its own generator.
        orders = torch.stack(
            [
                torch.randperm(n_train, generator=make_generator(plan.seed, "order", int(m), epoch))
                for m in member_ids
            ]
        ).to(train.device)
        space.model.train()
        # Dropout draws from the global RNG inside vmap; fork it and seed it per unit and epoch
        # so runs are reproducible without leaking state to the caller.
        with (
            torch.random.fork_rng(devices=[] if params.device.type == "cpu" else [params.device]),
            step_threads(),
        ):
            torch.manual_seed(derive_seed(plan.seed, "dropout", int(member_ids[0]), epoch))
            if snapshotting and plan.snapshot_unit == "step":
                # Snapshots see every member at the same step: the parts meet after each one.
                for batch in range(steps_per_epoch):
                    runner.map(partial(advance_steps, orders=orders, first=step, batches=[batch]))
                    step += 1
                    if step % plan.snapshot_every == 0:
                        snapshot(step)
            else:
                # The parts never meet within an epoch: handing each step to the threads and
                # waiting for them cost more than the step's GIL-free work (thread wake-ups).
                batches = list(range(steps_per_epoch))
                runner.map(partial(advance_steps, orders=orders, first=step, batches=batches))
                step += steps_per_epoch
        metrics = record(epoch + 1)
        if (
            snapshotting
            and plan.snapshot_unit == "epoch"
            and (epoch + 1) % plan.snapshot_every == 0
        ):
            snapshot(step)
        if stop_when is not None:
            now = stop_when(epoch + 1, metrics).reshape(-1, 1).to(done.device) & ~done
            stopped_at[now.reshape(-1).cpu()] = epoch + 1
            done |= now
            if bool((done | ~active).all()):
                break

    runner.close()
    diverged = ~active.reshape(-1).cpu()
    return Population(
        space=space,
        params=params,
        init=init,
        buffers=buffers,
        history=history,
        diverged=diverged,
        member_ids=member_ids,
        snapshot_steps=snapshot_steps,
        stopped_at=stopped_at if stop_when is not None else None,
    )


# --------------------------------------------------------------------------- helpers


def _training_batch(
    x: torch.Tensor | Batch,
    y: torch.Tensor | None,
    loss_fn: LossFn | None,
    adapter: BatchAdapter | None = None,
) -> Batch:
    """``x`` (a batch) or the tensors ``(x, y)`` as a batch, its adapter given ``loss_fn``."""
    if isinstance(x, Batch):
        if y is not None:
            raise TypeError("pass either a Batch or tensors x_train, y_train, not both")
        reader = resolve_adapter(x.adapter, loss_fn)
        return x if reader is x.adapter else Batch.read(x.raw, reader)
    if y is None:
        raise TypeError("tensors x_train need their targets y_train")
    return Batch.read((x, y), resolve_adapter(adapter, loss_fn))


def _stacked_program(
    space: ParamSpace, loss_fn: LossFn | None, compile: bool, engine: Engine, pairs: bool
) -> StackedProgram | None:
    """The stacked program ``engine`` asks for, or ``None`` for the vmap path."""
    if engine not in ("auto", "stacked", "vmap"):
        raise ValueError(f"unknown engine '{engine}' (use auto, stacked or vmap)")
    if engine == "vmap" or (compile and engine == "auto"):
        return None
    if not pairs:
        if engine == "stacked":
            raise ValueError(
                "engine 'stacked' cannot run this data: it needs (X, y) tensors read by the "
                "default rules; use engine='vmap'"
            )
        return None
    try:
        return StackedProgram(space, loss_fn)
    except NotTraceable as reason:
        if engine == "stacked":
            raise ValueError(f"engine 'stacked' cannot run this model: {reason}") from None
        return None


def _member_shares(members: int, device: torch.device) -> list[slice]:
    """Contiguous shares of the members, one per torch thread on CPU (one share elsewhere)."""
    return even_shares(members, thread_count(device, members))


def _program_step(program: StackedProgram) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``program``'s step with the vmap step's signature (buffers unused: it has none)."""
    return lambda params, buffers, xb, yb: program.step(params, xb, yb)


def _stacked_step(
    space: ParamSpace, loss_fn: LossFn | None, shares: list[slice]
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The stacked engine's step over all members, each share's program on its own thread.

    For steps whose gradients are transformed across members before the update (a
    ``grad_transform``); otherwise each share advances on its own (see ``fit_members``).
    """
    steps = [_program_step(StackedProgram(space, loss_fn)) for _ in shares]
    runner = ThreadShares(len(shares))

    def step(
        params: torch.Tensor, buffers: Any, xb: torch.Tensor, yb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        results = runner.map(
            lambda i: steps[i](params[shares[i]], buffers, xb[shares[i]], yb[shares[i]])
        )
        return torch.cat([r[0] for r in results]), torch.cat([r[1] for r in results])

    return step


def _vectorised_step(
    space: ParamSpace,
    member_loss: Callable[..., torch.Tensor],
    compile: bool,
    data_dims: Any = 0,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``step(params (K, D), buffers, *data) -> (losses (K,), grads (K, D))``.

    ``member_loss(named, buffers, *data)`` is one member's loss: :func:`member_loss_fn` with
    data ``xb (K, B, ...), yb (K, B)``, or :func:`member_batch_loss_fn` with one raw batch whose
    per-sample tensors are ``(K, B, ...)``. ``data_dims`` is that raw batch's ``in_dims``
    (``Batch.member_dims()``); the default 0 maps every argument over members.

    Eager mode takes gradients with ordinary autograd through a vmapped forward, using
    per-tensor leaf views of the flat parameters: differentiating through slices of one flat
    leaf would make autograd materialise a zero (K, D) gradient per tensor, which profiling
    showed to cost half of each step. The compiled path uses ``grad_and_value``, which
    ``torch.compile`` traces into one graph.
    """
    in_dims: Any = 0 if isinstance(data_dims, int) else (0, 0, data_dims)
    slots = space.slots

    def flat_grads(grads: Sequence[torch.Tensor], members: int) -> torch.Tensor:
        return torch.cat([g.reshape(members, -1) for g in grads], dim=1)

    if compile:
        batched = torch.compile(
            vmap(grad_and_value(member_loss), in_dims=in_dims, randomness="different")
        )

        def compiled_step(params, buffers, *data):
            grads, losses = batched(space.unflatten(params), buffers, *data)
            return losses.detach(), flat_grads([grads[s.name] for s in slots], params.shape[0])

        return compiled_step

    batched_loss = vmap(member_loss, in_dims=in_dims, randomness="different")

    def eager_step(params, buffers, *data):
        views = space.unflatten(params)
        leaves = {name: view.detach().requires_grad_() for name, view in views.items()}
        losses = batched_loss(leaves, buffers, *data)
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return losses.detach(), flat_grads(grads, params.shape[0])

    return eager_step


def _evaluate(
    space: ParamSpace,
    params: torch.Tensor,
    buffers: Mapping[str, torch.Tensor],
    splits: Mapping[str, Batch],
    chunk: int,
) -> dict[str, torch.Tensor]:
    metrics: dict[str, torch.Tensor] = {}
    for split, batch in splits.items():
        loss, acc = evaluate_points(
            space, params, batch, buffers=buffers, buffers_batched=True, sample_chunk=chunk
        )
        metrics[f"{split}_loss"], metrics[f"{split}_acc"] = loss, acc
    return metrics
