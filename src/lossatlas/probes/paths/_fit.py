"""What tunnels and connectors share: the constrained optimisation of their points (projected
gradient, or Benton et al.'s simplex objective), data preparation and evaluation."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from lossatlas.data.adapter import Split, training_data
from lossatlas.evaluate import LossFn, evaluate_points, member_loss_fn
from lossatlas.optim import HyperParams, make_optimizer, make_schedule
from lossatlas.params import ParamSpace
from lossatlas.populations.train import Population, TrainPlan, fit_members
from lossatlas.probes._simplex import log_volume, sample_simplices, scatter_weights
from lossatlas.probes.paths.options import ConnectorOptions
from lossatlas.probes.paths.projection import projection_onto_complement
from lossatlas.probes.subspace import dirichlet_samples
from lossatlas.seeding import derive_seed, make_generator

__all__ = [
    "as_optima",
    "benton_simplex",
    "blocks",
    "deviation_cosines",
    "evaluate_all",
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
    x_train: Tensor,
    y_train: Tensor,
    options: ConnectorOptions,
    *,
    member_ids: Tensor,
    seed: int,
    buffers: Mapping[str, Tensor] | None,
    loss_fn: LossFn | None,
) -> Population:
    """Train the points ``starts`` (K, D) with gradients projected off ``span(basis)``.

    One ``fit_members`` population; point ``i`` is member ``member_ids[i]`` and draws its data
    order from ``(seed, "order", member_ids[i], epoch)``, so it trains the same alone.
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
    return fit_members(
        space,
        starts,
        x_train,
        y_train,
        plan=plan,
        hp=hp,
        member_ids=member_ids,
        eval_splits={"train": (x_train, y_train)},
        loss_fn=loss_fn,
        buffers=batched,
        on_snapshot=reproject if retract else None,
        grad_transform=project,
    )


def benton_simplex(
    space: ParamSpace,
    optima: Tensor,
    starts: Tensor,
    x_train: Tensor,
    y_train: Tensor,
    options: ConnectorOptions,
    *,
    seed: int,
    buffers: Mapping[str, Tensor] | None,
    loss_fn: LossFn | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Benton et al. (2021): train the connector's free vertices ``starts`` (P, D) on
    ``E_{simplex, w ~ Dir(1)} L(w @ corners) - benton_volume * E log vol(simplex)``.

    Returns the trained points ``(P, D)`` and their ``train_loss``/``train_acc`` history.
    """
    m = optima.shape[0] - 1
    points = starts.detach().clone()
    n_train, n_points = x_train.shape[0], points.shape[0]
    steps_per_epoch = math.ceil(n_train / options.batch_size)
    schedule = make_schedule(options.schedule, steps_per_epoch, options.epochs)
    optimizer = make_optimizer(options.optimizer)
    hp = HyperParams.build(points, lr=options.lr, weight_decay=0.0, momentum=options.momentum)
    state = optimizer.init_state(points)
    active = torch.ones(n_points, 1, dtype=torch.bool, device=points.device)
    fixed = dict(buffers) if buffers is not None else dict(space.model.named_buffers())
    n_s = options.benton_samples
    batched_loss = vmap(member_loss_fn(space, loss_fn), randomness="different")
    history = {
        name: torch.full((n_points, options.epochs + 1), float("nan"))
        for name in ("train_loss", "train_acc")
    }
    simplex_size = 2 if options.shape == "star" else m + 1
    simplex_dummy = torch.empty(simplex_size, 0, dtype=torch.float64)

    def record(epoch: int) -> None:
        loss, acc = evaluate_points(
            space,
            points,
            x_train,
            y_train,
            buffers=fixed,
            loss_fn=loss_fn,
            sample_chunk=options.eval_batch_size,
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
                index = index.to(x_train.device)
                xb, yb = x_train[index], y_train[index]
                simplices = sample_simplices(m, options.shape, n_s, gen)
                w = dirichlet_samples(simplex_dummy, n_s, generator=gen)
                weights = scatter_weights(simplices, w, m + 1 + n_points).to(points)
                leaf = points.detach().requires_grad_()
                verts = torch.cat([optima, leaf])
                samples = weights @ verts  # (n_s, D); gradients flow to the free vertices
                # Each sample gets its own copy of the buffers (BatchNorm updates them in place).
                bufs = {k: v.unsqueeze(0).repeat(n_s, *[1] * v.dim()) for k, v in fixed.items()}
                xs = xb.unsqueeze(0).expand(n_s, *xb.shape)
                ys = yb.unsqueeze(0).expand(n_s, *yb.shape)
                losses = batched_loss(space.unflatten(samples), bufs, xs, ys)
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


def prepare_data(data: Any, like: Tensor) -> tuple[Tensor, Tensor, dict[str, Split]]:
    """Train tensors plus the ``train``/``test`` splits, on ``like``'s device and dtype."""
    x_train, y_train, splits = training_data(data)

    def move(x: Tensor, y: Tensor) -> Split:
        dtype = like.dtype if x.is_floating_point() else None
        return x.to(device=like.device, dtype=dtype), y.to(like.device)

    kept: dict[str, Split] = {s: move(*splits[s]) for s in ("train", "test") if s in splits}
    kept.setdefault("train", move(x_train, y_train))
    x, y = kept["train"]
    return x, y, kept


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
    splits: Mapping[str, Split],
    buffers: Mapping[str, Tensor] | None,
    loss_fn: LossFn | None,
    options: ConnectorOptions,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Loss and accuracy ``(B,)`` of every point on every split."""
    loss: dict[str, Tensor] = {}
    acc: dict[str, Tensor] = {}
    for split, (x, y) in splits.items():
        loss[split], acc[split] = evaluate_points(
            space,
            thetas,
            x,
            y,
            buffers=buffers,
            loss_fn=loss_fn,
            sample_chunk=options.eval_batch_size,
        )
    return loss, acc
