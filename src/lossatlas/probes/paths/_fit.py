"""What tunnels and connectors share: the constrained optimisation of their points (projected
gradient, or Benton et al.'s simplex objective), data preparation and evaluation.

The data is read through the batch interface (:mod:`lossatlas.data.batches`), so a path fits
on anything a probe reads: ``(X, y)`` tensors, a ``DataLoader`` of pairs or of dict batches,
a keyword-argument model, a regression loss. It is read whole into memory
(:func:`prepare_data`), because every point draws its own data order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from lossatlas.data.adapter import training_batches
from lossatlas.data.batches import Batch, BatchAdapter, resolve_adapter
from lossatlas.evaluate import LossFn, evaluate_points, member_batch_loss_fn, member_loss_fn
from lossatlas.optim import HyperParams, make_optimizer, make_schedule
from lossatlas.params import ParamSpace
from lossatlas.populations.train import Population, TrainPlan, fit_members
from lossatlas.probes._simplex import log_volume, sample_simplices, scatter_weights
from lossatlas.probes.paths.options import ConnectorOptions
from lossatlas.probes.paths.projection import projection_onto_complement
from lossatlas.probes.subspace import dirichlet_samples
from lossatlas.seeding import derive_seed, make_generator

__all__ = [
    "Convergence",
    "as_optima",
    "benton_simplex",
    "blocks",
    "deviation_cosines",
    "evaluate_all",
    "joint_path_points",
    "labels_comparable",
    "modes_restored",
    "optimise_points",
    "prepare_data",
    "segment",
    "to_numpy",
]


def to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def optimise_points(
    space: ParamSpace,
    starts: Tensor,
    basis: Tensor,
    train: Batch,
    options: ConnectorOptions,
    *,
    member_ids: Tensor,
    seed: int,
    buffers: Mapping[str, Tensor] | None,
    reference: float | None = None,
) -> Population:
    """Train the points ``starts`` (K, D) with gradients projected off ``span(basis)``.

    ``train`` is the in-memory training batch of :func:`prepare_data` (its adapter holds the
    loss).

    One ``fit_members`` population; point ``i`` is member ``member_ids[i]`` and draws its data
    order from ``(seed, "order", member_ids[i], epoch)``, so it trains the same alone. With
    ``options.tolerance`` and a ``reference`` train loss (the optima's mean), a point stops once
    its train loss is at most ``(1 + tolerance) * reference`` (``Population.stopped_at``).
    """
    project = projection_onto_complement(basis)
    retract = options.optimizer == "adam"
    plan = TrainPlan(
        epochs=options.epochs,
        batch_size=options.batch_size,
        optimizer=options.optimizer,
        schedule=options.schedule,
        seed=seed,
        eval_batch_size=options.eval_batch_size,
        # Adam's per-coordinate scaling leaves the hyperplane: re-project after every step.
        snapshot_every=1 if retract else 0,
        snapshot_unit="step",
    )
    # Decay is added after the projection inside the optimiser, so it must be off.
    hp = HyperParams.build(starts, lr=options.lr, weight_decay=0.0, momentum=options.momentum)
    anchor = starts.detach().clone()

    def reproject(index: int, step: int, params: Tensor) -> None:
        params.copy_(anchor + project(params - anchor))

    batched = None
    if buffers is not None:
        n = starts.shape[0]
        batched = {k: v.unsqueeze(0).repeat(n, *[1] * v.dim()) for k, v in buffers.items()}
    stop_when = None
    if options.tolerance is not None and reference is not None:
        limit = (1.0 + options.tolerance) * reference

        def stop_when(epoch: int, metrics: dict[str, Tensor]) -> Tensor:
            return metrics["train_loss"] <= limit

    return fit_members(
        space,
        starts,
        train,
        plan=plan,
        hp=hp,
        member_ids=member_ids,
        eval_splits={"train": train},
        buffers=batched,
        on_snapshot=reproject if retract else None,
        grad_transform=project,
        stop_when=stop_when,
    )


@dataclass(frozen=True)
class Convergence:
    """How close optimised points came to the optima they connect.

    Attributes:
        reference: the optima's mean train loss.
        losses: ``(K,)`` each point's final train loss.
        gaps: ``(K,)`` ``losses / reference - 1``.
        tolerance: the stated tolerance (``None``: fixed epochs, nothing was required).
        converged: every gap is at most the tolerance (``False`` without a tolerance... see
            :meth:`of`).
        stopped_at: ``(K,)`` the epoch each point stopped at (-1: it used the whole cap).
    """

    reference: float
    losses: Tensor
    gaps: Tensor
    tolerance: float | None
    converged: bool
    stopped_at: Tensor

    @classmethod
    def of(
        cls, losses: Tensor, reference: float, tolerance: float | None, stopped_at: Tensor | None
    ) -> Convergence:
        """The convergence of points with train ``losses`` (K,) against ``reference``; without a
        tolerance a point counts as converged when it is at most the reference's loss."""
        losses = losses.detach().double().cpu()
        gaps = losses / reference - 1.0 if reference > 0 else torch.full_like(losses, math.nan)
        bound = 0.0 if tolerance is None else tolerance
        converged = bool(torch.isfinite(gaps).all() and (gaps <= bound + 1e-12).all())
        stopped = stopped_at if stopped_at is not None else torch.full_like(losses, -1)
        return cls(reference, losses, gaps, tolerance, converged, stopped.to(torch.int64))

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers: the reference, the largest gap, whether it converged."""
        return {
            "reference_loss": self.reference,
            "max_gap": float(self.gaps.max()) if self.gaps.numel() else math.nan,
            "tolerance": self.tolerance,
            "converged": self.converged,
            "epochs": [int(e) for e in self.stopped_at],
        }


def joint_path_points(
    space: ParamSpace,
    a: Tensor,
    b: Tensor,
    starts: Tensor,
    basis: Tensor,
    train: Batch,
    options: ConnectorOptions,
    *,
    seed: int,
    buffers: Mapping[str, Tensor] | None,
    reference: float | None,
) -> tuple[Tensor, dict[str, Tensor], int]:
    """Optimise a tunnel's split points ``starts`` (k, D) jointly, along the whole path.

    Every step samples one point uniformly on each of the ``k + 1`` segments
    ``a -> p_1 -> ... -> p_k -> b`` (seeded), takes the mean training loss of those points on
    the step's batch, and moves every split point with its gradient projected off
    ``span(basis)`` (the same hyperplane constraint as the independent recipe). So the points
    are pulled towards a path that is low-loss *between* them too, not only at them. With a
    tolerance and a ``reference`` it stops once the nodes and the segment midpoints all have a
    train loss of at most ``(1 + tolerance) * reference``.

    Returns the points ``(k, D)``, the history (``path_max_loss`` over the nodes and segment
    midpoints, ``(epochs + 1,)``, NaN after a stop) and the epoch it stopped at (-1: the cap).
    """
    project = projection_onto_complement(basis)
    points = starts.detach().clone()
    k, n_train = points.shape[0], train.size
    steps_per_epoch = math.ceil(n_train / options.batch_size)
    schedule = make_schedule(options.schedule, steps_per_epoch, options.epochs)
    optimizer = make_optimizer(options.optimizer)
    hp = HyperParams.build(points, lr=options.lr, weight_decay=0.0, momentum=options.momentum)
    state = optimizer.init_state(points)
    active = torch.ones(k, 1, dtype=torch.bool, device=points.device)
    fixed = dict(buffers) if buffers is not None else dict(space.model.named_buffers())
    batch_losses = shared_batch_losses(space, train)
    history = {"path_max_loss": torch.full((options.epochs + 1,), math.nan)}
    limit = None
    if options.tolerance is not None and reference is not None:
        limit = (1.0 + options.tolerance) * reference

    def path_max(epoch: int) -> float:
        nodes = torch.cat([a[None], points, b[None]])
        probes = torch.cat([points, 0.5 * (nodes[:-1] + nodes[1:])])
        loss, _ = evaluate_points(
            space, probes, train, buffers=fixed, sample_chunk=options.eval_batch_size
        )
        worst = float(loss.max())
        history["path_max_loss"][epoch] = worst
        return worst

    stopped = -1
    path_max(0)
    step = 0
    for epoch in range(options.epochs):
        order = torch.randperm(n_train, generator=make_generator(seed, "order", "joint", epoch))
        gen = make_generator(seed, "joint", "segments", epoch)
        space.model.train()
        with torch.random.fork_rng(devices=[] if points.device.type == "cpu" else [points.device]):
            torch.manual_seed(derive_seed(seed, "dropout", "joint", epoch))
            for batch in range(steps_per_epoch):
                index = order[batch * options.batch_size : (batch + 1) * options.batch_size]
                w = torch.rand(k + 1, 1, generator=gen, dtype=torch.float64).to(points)
                leaf = points.detach().requires_grad_()
                nodes = torch.cat([a[None], leaf, b[None]])
                samples = nodes[:-1] + w * (nodes[1:] - nodes[:-1])  # (k + 1, D)
                bufs = {n: v.unsqueeze(0).repeat(k + 1, *[1] * v.dim()) for n, v in fixed.items()}
                losses = batch_losses(space.unflatten(samples), bufs, index)
                (grads,) = torch.autograd.grad(losses.mean(), leaf)
                # A point's two segments pull it with weights w and 1 - w (1 in expectation);
                # the mean over the k + 1 segments divides that by k + 1: undo it, so the step
                # size matches the independent recipe's at the same learning rate.
                grads = project(grads.detach() * (k + 1))
                optimizer.step(points, grads, state, hp, schedule(step), active)
                step += 1
        worst = path_max(epoch + 1)
        if limit is not None and worst <= limit:
            stopped = epoch + 1
            break
    return points, history, stopped


def shared_batch_losses(space: ParamSpace, train: Batch) -> Callable[..., Tensor]:
    """``losses(named, buffers, index) -> (n,)``: the mean training loss of each of ``n`` points
    (``named`` and ``buffers`` with a leading ``n``) on one shared batch, the samples ``index``
    (B,) of the in-memory ``train``. Every point sees the same samples; dropout draws differ.

    ``(x, y)`` tensors read by the default rules are indexed and broadcast to the points as
    views; any other batch structure is read through its adapter, one copy per point.
    """
    if train.reads_pairs:
        x, y = train.raw
        pair_loss = vmap(member_loss_fn(space, train.adapter.loss_fn), randomness="different")

        def pair_losses(named: Mapping[str, Tensor], bufs: Any, index: Tensor) -> Tensor:
            n = next(iter(named.values())).shape[0]
            index = index.to(x.device)
            xb, yb = x[index], y[index]
            return pair_loss(named, bufs, xb.expand(n, *xb.shape), yb.expand(n, *yb.shape))

        return pair_losses
    batch_loss = vmap(
        member_batch_loss_fn(space, train.adapter),
        in_dims=(0, 0, train.member_dims()),
        randomness="different",
    )

    def read_losses(named: Mapping[str, Tensor], bufs: Any, index: Tensor) -> Tensor:
        n = next(iter(named.values())).shape[0]
        return batch_loss(named, bufs, train.rows(index.expand(n, -1)))

    return read_losses


def benton_simplex(
    space: ParamSpace,
    optima: Tensor,
    starts: Tensor,
    train: Batch,
    options: ConnectorOptions,
    *,
    seed: int,
    buffers: Mapping[str, Tensor] | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Benton et al. (2021): train the connector's free vertices ``starts`` (P, D) on
    ``E_{simplex, w ~ Dir(1)} L(w @ corners) - benton_volume * E log vol(simplex)``.

    Returns the trained points ``(P, D)`` and their ``train_loss``/``train_acc`` history.
    """
    m = optima.shape[0] - 1
    points = starts.detach().clone()
    n_train, n_points = train.size, points.shape[0]
    steps_per_epoch = math.ceil(n_train / options.batch_size)
    schedule = make_schedule(options.schedule, steps_per_epoch, options.epochs)
    optimizer = make_optimizer(options.optimizer)
    hp = HyperParams.build(points, lr=options.lr, weight_decay=0.0, momentum=options.momentum)
    state = optimizer.init_state(points)
    active = torch.ones(n_points, 1, dtype=torch.bool, device=points.device)
    fixed = dict(buffers) if buffers is not None else dict(space.model.named_buffers())
    n_s = options.benton_samples
    batch_losses = shared_batch_losses(space, train)
    history = {
        name: torch.full((n_points, options.epochs + 1), float("nan"))
        for name in ("train_loss", "train_acc")
    }
    simplex_size = 2 if options.shape == "star" else m + 1
    simplex_dummy = torch.empty(simplex_size, 0, dtype=torch.float64)

    def record(epoch: int) -> None:
        loss, acc = evaluate_points(
            space, points, train, buffers=fixed, sample_chunk=options.eval_batch_size
        )
        history["train_loss"][:, epoch], history["train_acc"][:, epoch] = loss.cpu(), acc.cpu()

    record(0)
    step = 0
    for epoch in range(options.epochs):
        order = torch.randperm(n_train, generator=make_generator(seed, "order", "benton", epoch))
        gen = make_generator(seed, "benton", "samples", epoch)
        space.model.train()
        with torch.random.fork_rng(devices=[] if points.device.type == "cpu" else [points.device]):
            torch.manual_seed(derive_seed(seed, "dropout", "benton", epoch))
            for batch in range(steps_per_epoch):
                index = order[batch * options.batch_size : (batch + 1) * options.batch_size]
                simplices = sample_simplices(m, options.shape, n_s, gen)
                w = dirichlet_samples(simplex_dummy, n_s, generator=gen)
                weights = scatter_weights(simplices, w, m + 1 + n_points).to(points)
                leaf = points.detach().requires_grad_()
                verts = torch.cat([optima, leaf])
                samples = weights @ verts  # (n_s, D); gradients flow to the free vertices
                # Each sample gets its own copy of the buffers (BatchNorm updates them in place).
                bufs = {k: v.unsqueeze(0).repeat(n_s, *[1] * v.dim()) for k, v in fixed.items()}
                losses = batch_losses(space.unflatten(samples), bufs, index)
                objective = losses.mean()
                if options.benton_volume > 0:
                    v64 = verts.to(torch.float64)
                    # Only the free vertices need gradients; the Gram form avoids (n, m, D).
                    log_vol = log_volume(v64 @ v64.T, simplices.to(points.device))
                    objective = objective - options.benton_volume * log_vol.mean().to(losses)
                (grads,) = torch.autograd.grad(objective, leaf)
                optimizer.step(points, grads.detach(), state, hp, schedule(step), active)
                step += 1
        record(epoch + 1)
    return points, history


@contextlib.contextmanager
def modes_restored(model: nn.Module) -> Iterator[None]:
    """Give the user's module back with every submodule's train/eval flag as it was (the
    training loop switches the whole module to train mode)."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def as_optima(optima: Tensor, space: ParamSpace, what: str) -> Tensor:
    if optima.dim() != 2 or optima.shape[1] != space.dim:
        raise ValueError(f"{what} must have shape (n, {space.dim}), got {tuple(optima.shape)}")
    if not torch.isfinite(optima).all():
        raise ValueError(f"{what} contain NaN or inf")
    return optima.clone()


def prepare_data(
    data: Any, like: Tensor, adapter: BatchAdapter | None, loss_fn: LossFn | None
) -> tuple[Batch, dict[str, Batch]]:
    """``(train, splits)``: the training batch and the ``train``/``test`` splits, in memory.

    ``data`` is anything :func:`~lossatlas.data.adapter.training_batches` reads, read with
    ``adapter`` (``loss_fn`` filled in when the adapter sets no loss); every batch is moved to
    ``like``'s device, its floating tensors in ``like``'s dtype.
    """
    _, splits = training_batches(data, adapter)
    reader = resolve_adapter(adapter, loss_fn)
    kept: dict[str, Batch] = {
        name: Batch.read(splits[name].raw, reader).to(like.device, like.dtype)
        for name in ("train", "test")
        if name in splits
    }
    return kept["train"], kept


def labels_comparable(batch: Batch) -> bool:
    """Whether the batch's target is class labels, so predicted labels (argmax of the logits)
    can be compared between points; a regression target or none has no such labels."""
    return batch.target is not None and not (
        batch.target.is_floating_point() or batch.target.is_complex()
    )


def segment(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """``(P, D)`` points ``(1 - t) a + t b``: exactly ``a`` at 0 and ``b`` at 1."""
    tt = t.to(a.dtype).unsqueeze(1)
    return (1 - tt) * a + tt * b


def deviation_cosines(deviations: Tensor) -> Tensor:
    """``(k, k)`` cosines between rows; NaN in rows/columns of a zero deviation."""
    dev = deviations.to(torch.float64)
    norms = dev.norm(dim=1)
    unit = dev / torch.where(norms > 0, norms, torch.nan).unsqueeze(1)
    return (unit @ unit.T).clamp(-1.0, 1.0)


def blocks(cosines: Tensor) -> dict[str, float]:
    """Mean off-diagonal cosine within the first ``ceil(k/2)``, within the rest, and across."""
    k = cosines.shape[0]
    half = math.ceil(k / 2)

    def mean_within(block: Tensor) -> float:
        n = block.shape[0]
        if n < 2:
            return float("nan")
        off = ~torch.eye(n, dtype=torch.bool)
        return float(block[off].mean())

    across = cosines[:half, half:]
    return {
        "within_first": mean_within(cosines[:half, :half]),
        "within_second": mean_within(cosines[half:, half:]),
        "across": float(across.mean()) if across.numel() else float("nan"),
    }


def evaluate_all(
    space: ParamSpace,
    thetas: Tensor,
    splits: Mapping[str, Batch],
    buffers: Mapping[str, Tensor] | None,
    options: ConnectorOptions,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Loss and accuracy ``(B,)`` of every point on every split (accuracy NaN where a split
    has none, as for a regression target)."""
    loss: dict[str, Tensor] = {}
    acc: dict[str, Tensor] = {}
    for split, batch in splits.items():
        loss[split], acc[split] = evaluate_points(
            space, thetas, batch, buffers=buffers, sample_chunk=options.eval_batch_size
        )
    return loss, acc
