"""m-connectors among m + 1 optima (paper A5): optimised face barycentres and their simplices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lossatlas.data.batches import BatchAdapter
from lossatlas.evaluate import LossFn
from lossatlas.params import ParamSpace
from lossatlas.probes._simplex import (
    face_count,
    face_sets,
    orthonormal_span,
    sample_simplices,
    scatter_weights,
)
from lossatlas.probes.paths._fit import (
    Convergence,
    as_optima,
    benton_simplex,
    evaluate_all,
    modes_restored,
    optimise_points,
    prepare_data,
    to_numpy,
)
from lossatlas.probes.paths.options import ConnectorOptions
from lossatlas.probes.subspace import dirichlet_samples
from lossatlas.seeding import derive_seed, make_generator

__all__ = ["Connector", "m_connector"]


# The subdivision connector optimises 2^(m+1) - m - 2 points; beyond this it stops being a probe.
_MAX_FACE_POINTS = 256


@dataclass(eq=False, repr=False)
class Connector:
    """An m-connector among ``m + 1`` optima and the loss over samples on it.

    The vertex table is ``vertices = [optima; points]`` (``V = m + 1 + P`` rows); every sample
    is ``samples_weights @ vertices``.

    Attributes:
        optima: ``(m + 1, D)``.
        points: ``(P, D)`` the optimised points; ``points[0]`` is the optimised centroid ``c*``.
        start_points: ``(P, D)`` where they started: the barycentres of ``faces``.
        faces: the optima indices whose barycentre each point started at (centroid first).
        shape: ``"cone"``, ``"star"`` or ``"subdivision"`` (see the module docstring).
        span_basis: ``(D, m)`` orthonormal basis of ``span{theta_i - theta_0}``.
        samples_simplices: ``(S, m + 1)`` (star: ``(S, 2)``) vertex indices of each sample's
            simplex; the centroid's index comes first.
        samples_weights: ``(S, V)`` float64 barycentric weights over the vertex table:
            non-negative, summing to 1, zero outside the sample's simplex.
        loss_samples, acc_samples: split -> ``(S,)`` on the connector.
        loss_hull, acc_hull: split -> ``(S,)`` the same weights on the unoptimised vertices
            (points of the optima's convex hull): the straight baseline.
        loss_optima, acc_optima: split -> ``(m + 1,)``.
        loss_centroid, acc_centroid: split -> ``()`` at the straight (unoptimised) centroid.
        loss_points, acc_points: split -> ``(P,)`` at the optimised points.
        history: ``"train_loss"`` / ``"train_acc"`` -> ``(P, epochs + 1)`` of the points.
        convergence: how close the points came to the optima's mean train loss
            (:class:`~lossatlas.probes.paths._fit.Convergence`).
        method: ``"projected"`` or ``"benton"``.
        options: the options used.
    """

    optima: Tensor
    points: Tensor
    start_points: Tensor
    faces: list[tuple[int, ...]]
    shape: str
    span_basis: Tensor
    samples_simplices: Tensor
    samples_weights: Tensor
    loss_samples: dict[str, Tensor]
    acc_samples: dict[str, Tensor]
    loss_hull: dict[str, Tensor]
    acc_hull: dict[str, Tensor]
    loss_optima: dict[str, Tensor]
    acc_optima: dict[str, Tensor]
    loss_centroid: dict[str, Tensor]
    acc_centroid: dict[str, Tensor]
    loss_points: dict[str, Tensor]
    acc_points: dict[str, Tensor]
    history: dict[str, Tensor]
    convergence: Convergence
    method: str
    options: ConnectorOptions = field(default_factory=ConnectorOptions)

    def __repr__(self) -> str:
        return (
            f"Connector(m={self.m}, points={self.points.shape[0]}, "
            f"samples={self.samples_weights.shape[0]}, method={self.method!r})"
        )

    @property
    def m(self) -> int:
        """The number of optima minus one."""
        return self.optima.shape[0] - 1

    @property
    def vertices(self) -> Tensor:
        """``(V, D)`` the vertex table ``[optima; points]``."""
        return torch.cat([self.optima, self.points])

    @property
    def middle(self) -> Tensor:
        """``(D,)`` the optimised centroid ``c*`` (for curvature counts)."""
        return self.points[0]

    def points_at(self, weights: Tensor) -> Tensor:
        """``(n, D)`` points ``weights @ vertices`` for weights ``(n, V)``.

        A one-hot row reproduces its vertex exactly."""
        return weights.to(self.optima) @ self.vertices

    def sample_points(self) -> Tensor:
        """``(S, D)`` the Dirichlet samples on the connector."""
        return self.points_at(self.samples_weights)

    def summary(self, split: str = "train") -> dict[str, float]:
        """Headline numbers on ``split``: sample loss (mean, max), optima, centroids, hull."""
        return {
            "m": float(self.m),
            "loss_samples_mean": float(self.loss_samples[split].mean()),
            "loss_samples_max": float(self.loss_samples[split].max()),
            "acc_samples_mean": float(self.acc_samples[split].mean()),
            "loss_optima_mean": float(self.loss_optima[split].mean()),
            "acc_optima_mean": float(self.acc_optima[split].mean()),
            "loss_hull_mean": float(self.loss_hull[split].mean()),
            "loss_centroid": float(self.loss_centroid[split]),
            "loss_middle": float(self.loss_points[split][0]),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named numpy arrays for the store (metrics as ``{metric}_{where}_{split}``)."""
        arrays = {
            "optima": to_numpy(self.optima),
            "points": to_numpy(self.points),
            "span_basis": to_numpy(self.span_basis),
            "samples_simplices": to_numpy(self.samples_simplices),
            "samples_weights": to_numpy(self.samples_weights),
        }
        for name in ("samples", "hull", "optima", "centroid", "points"):
            for metric in ("loss", "acc"):
                per_split: dict[str, Tensor] = getattr(self, f"{metric}_{name}")
                arrays.update({f"{metric}_{name}_{s}": to_numpy(v) for s, v in per_split.items()})
        arrays.update({f"history_{k}": to_numpy(v) for k, v in self.history.items()})
        return arrays


def m_connector(
    model: nn.Module,
    data: Any,
    optima: Tensor,
    *,
    options: ConnectorOptions | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
) -> Connector:
    """Connect ``m + 1`` optima ``(m + 1, D)`` through optimised points, paper A5.

    ``options.method="projected"`` trains the points (the centroid, or every face barycentre
    for ``options.shape="subdivision"``) as one population with the gradient projected onto the
    complement of the optima's affine span; ``"benton"`` trains them unprojected on the expected
    loss of the connector's simplices plus a volume term. Then ``options.dirichlet_samples``
    uniform samples of the connector, the same weights on the unoptimised hull, the optima and
    the straight centroid are evaluated on train and test. See the module docstring for the
    connector's simplices and the sampling.

    Args:
        model: any ``nn.Module`` (a template; its parameters are not changed).
        data: ``(X, y)``, a ``DataLoader`` (of ``(x, y)`` or of dict batches) or a lossatlas
            ``Dataset``; read whole into memory (every point draws its own data order).
        optima: ``(m + 1, D)``, ``m >= 1``, affinely independent.
        options: :class:`ConnectorOptions`.
        buffers: name -> tensor used at every point (default: the module's).
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.
        adapter: how to read the batches, call the model and score its outputs
            (:class:`~lossatlas.data.batches.BatchAdapter`); accuracies are NaN without class
            labels (a regression target).

    Returns:
        A :class:`Connector`.
    """
    with modes_restored(model):
        return _m_connector(
            model, data, optima, options or ConnectorOptions(), buffers, loss_fn, adapter
        )


def _m_connector(
    model: nn.Module,
    data: Any,
    optima: Tensor,
    opts: ConnectorOptions,
    buffers: Mapping[str, Tensor] | None,
    loss_fn: LossFn | None,
    adapter: BatchAdapter | None,
) -> Connector:
    space = ParamSpace(model)
    verts = as_optima(optima.detach(), space, "optima")
    m = verts.shape[0] - 1
    if m < 1:
        raise ValueError(f"need at least 2 optima, got {verts.shape[0]}")
    if face_count(m, opts.shape) > _MAX_FACE_POINTS:
        raise ValueError(
            f"shape='subdivision' with m={m} would optimise {face_count(m, opts.shape)} points; "
            "use m <= 7 or another shape"
        )
    train, splits = prepare_data(data, verts, adapter, loss_fn)
    basis = orthonormal_span(verts)
    sets = face_sets(m, opts.shape)
    bary = torch.zeros(len(sets), m + 1, dtype=torch.float64)
    for i, s in enumerate(sets):
        bary[i, list(s)] = 1.0 / len(s)
    start_points = bary.to(verts) @ verts
    seed = derive_seed(opts.seed, "connector")
    optima_loss, _ = evaluate_all(space, verts, {"train": train}, buffers, opts)
    reference = float(optima_loss["train"].mean())
    stopped_at = None
    if opts.method == "projected":
        population = optimise_points(
            space,
            start_points,
            basis,
            train,
            opts,
            member_ids=torch.arange(len(sets)),
            seed=seed,
            buffers=buffers,
            reference=reference,
        )
        points, history = population.params, population.history
        stopped_at = population.stopped_at
    else:
        points, history = benton_simplex(
            space,
            verts,
            start_points,
            train,
            opts,
            seed=seed,
            buffers=buffers,
        )

    n_vertices = m + 1 + len(sets)
    gen = make_generator(opts.seed, "connector", "samples")
    simplices = sample_simplices(m, opts.shape, opts.dirichlet_samples, gen)
    per_simplex = dirichlet_samples(
        torch.empty(simplices.shape[1], 0, dtype=torch.float64),
        opts.dirichlet_samples,
        generator=gen,
    )
    weights = scatter_weights(simplices, per_simplex, n_vertices)  # (S, V) float64
    w = weights.to(verts)
    samples = w @ torch.cat([verts, points])
    hull = w @ torch.cat([verts, start_points])
    everything = torch.cat([samples, hull, verts, start_points[:1], points])
    loss, acc = evaluate_all(space, everything, splits, buffers, opts)
    n_s, n_o = samples.shape[0], m + 1
    cuts = {"samples": (0, n_s), "hull": (n_s, 2 * n_s), "optima": (2 * n_s, 2 * n_s + n_o)}
    cuts["centroid"] = (2 * n_s + n_o, 2 * n_s + n_o + 1)
    cuts["points"] = (2 * n_s + n_o + 1, everything.shape[0])

    def part(metric: dict[str, Tensor], name: str) -> dict[str, Tensor]:
        lo, hi = cuts[name]
        out = {s: v[lo:hi] for s, v in metric.items()}
        return {s: v[0] for s, v in out.items()} if name == "centroid" else out

    return Connector(
        optima=verts,
        points=points,
        start_points=start_points,
        faces=sets,
        shape=opts.shape,
        span_basis=basis,
        samples_simplices=simplices,
        samples_weights=weights,
        loss_samples=part(loss, "samples"),
        acc_samples=part(acc, "samples"),
        loss_hull=part(loss, "hull"),
        acc_hull=part(acc, "hull"),
        loss_optima=part(loss, "optima"),
        acc_optima=part(acc, "optima"),
        loss_centroid=part(loss, "centroid"),
        acc_centroid=part(acc, "centroid"),
        loss_points=part(loss, "points"),
        acc_points=part(acc, "points"),
        history=history,
        convergence=Convergence.of(
            part(loss, "points")["train"], reference, opts.tolerance, stopped_at
        ),
        method=opts.method,
        options=opts,
    )
