"""Low-loss connections between optima: tunnels between two (A3) and m-connectors among many (A5).

Both are constrained optimisation of points of weight space, run as *one* population through
:func:`lossatlas.population.fit_members` (the library's one training loop) with the gradient
projected onto the orthogonal complement of the optima's affine span:
``g <- g - Q (Q^T g)`` (:func:`projection_onto_complement`). Every point therefore keeps its
coordinates inside the span and only moves away from it; for two optima the span is the line
through them (``Q = u = (theta_b - theta_a) / |theta_b - theta_a|``).

:func:`tunnel` (paper A3)
    The segment ``theta_a -> theta_b`` is split at ``k = options.points`` positions
    ``t_i = i / (k + 1)``, ``i = 1..k`` (the endpoints are optima already). Each split point is
    trained with the projected gradient; the tunnel is the polyline
    ``theta_a, p_1*, ..., p_k*, theta_b``. Because deviations are orthogonal to ``u``, the tunnel
    point at position ``t`` projects onto the line point at ``t``: both paths share ``path_t``.
    Deviation cosines are split into two blocks: the first ``ceil(k / 2)`` split points
    (nearer ``theta_a``) and the rest (the paper saw steps 0-4 vs 5-9 for ``k = 10``).

:func:`m_connector` (paper A5)
    ``m + 1`` optima. The optimised points are barycentres of faces of the optima simplex,
    started there; ``options.shape`` says which, and which simplices over the vertex table
    ``[optima, points]`` make up the connector (see :mod:`lossatlas.probes._simplex`):

    * ``"cone"``: the centroid only; the connector is ``union_i conv(c*, facet_i)``,
      facet ``i`` being all optima but ``i``. It contains every optimum as a vertex. For
      ``m >= 2`` it also contains the optima simplex's own (straight, unoptimised) facets, e.g.
      the straight edges between optima, so its samples include high-loss points near them
      (the weight on ``c*`` is Beta(1, m)): on MNIST-1D MLPs its mean sample loss at m = 3 is
      ~2x that of the star or the subdivision: it mixes the unoptimised hull into the connector.
    * ``"star"`` (default): the centroid only; the connector is the union of the segments
      ``[c*, theta_i]`` (the paper's "union of straight segments"). Any ``m``, cheapest. It is
      the default because every point of it is reached through the optimised centre, which is
      what the paper's construction optimises; the cone stays available for comparison.
    * ``"subdivision"``: every face barycentre (``2^(m+1) - m - 2`` points, so ``m <= 7``; all
      are projected off the span of *all* optima, so each keeps its barycentric coordinates); the
      connector is the barycentric subdivision ``union_pi conv(c*, ..., b*{pi0,pi1},
      theta_pi0)`` over the ``(m + 1)!`` orderings ``pi``. Each simplex holds one optimum, so
      no straight segment between optima remains.

    Dirichlet sampling on the connector: a simplex uniformly at random (a facet, an optimum or
    an ordering), then Dirichlet(1) weights over its vertices. For the cone and the subdivision
    every simplex has the same volume before optimisation, so this is the uniform distribution
    on the optima's convex hull; the same weights applied to the unoptimised vertices give the
    ``hull`` baseline reported beside the connector.

    ``method="benton"`` (Benton et al. 2021, loss-surface simplexes) trains the same points
    *without* projection by minimising the expected training loss over Dirichlet samples of the
    connector's simplices (``benton_samples`` fresh, seeded samples per step, all on the step's
    batch) minus ``benton_volume`` times the mean log-volume of the sampled simplices. The
    optima stay fixed. It uses a plain loop with the library's functional optimisers (the
    trained parameters are simplex vertices, not the points whose loss is taken, so
    ``fit_members`` does not fit).

Conventions, shared with the other probes:

* ``data`` is an ``(X, y)`` pair, a ``DataLoader`` or a lossatlas ``Dataset``. Training uses
  the train split; loss and accuracy are reported on ``train`` and, when the data has one, on
  ``test``. Label disagreement uses ``test`` (``train`` when there is none).
* The optima's dtype and device decide where and in what precision everything runs.
* ``buffers`` (BatchNorm statistics, name -> tensor) are used unchanged at every point, for
  training and evaluation alike (default: the module's own); they are not recomputed along
  the path. Evaluation is in eval mode (:func:`lossatlas.evaluate.evaluate_points`).
* Every point draws its own data order from ``(seed, "order", point index, epoch)`` with the
  seed derived from ``(options.seed, "tunnel")`` or ``(options.seed, "connector")``, so a point
  trains identically alone or in the population. Dirichlet samples come from
  ``make_generator(options.seed, "connector", "samples")``. No global RNG state is used.
* Weight decay is always 0: ``fit_members`` adds it after the projection, which would pull the
  points out of their constraint sets. With ``optimizer="adam"``, whose per-coordinate scaling
  also rotates a projected gradient out of the hyperplane, each point is re-projected onto its
  constraint set after every step (projected Adam).

Defaults (``ConnectorOptions()``): 5 epochs of SGD, lr 0.1, momentum 0.9, cosine-decayed,
batch 128. On MNIST-1D with the default ``mlp`` (D = 15,210; endpoints trained 20 epochs) a
9-point tunnel takes ~2 s with one CPU thread (~10 s with two threads on a shared, loaded
2-core machine) and brings the middle split point's training loss from 2.35 (on the line) to
0.55; an m-connector (m <= 10, centroid only) takes ~1 s.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn
from torch.func import vmap

from lossatlas.config import ScheduleConfig, StrictModel
from lossatlas.evaluate import LossFn, evaluate_points, member_loss_fn, predict_points
from lossatlas.optim import HyperParams, make_optimizer, make_schedule
from lossatlas.params import ParamSpace
from lossatlas.population import Population, TrainPlan, _resolve_data, fit_members
from lossatlas.probes._simplex import (
    Shape,
    face_count,
    face_sets,
    log_volume,
    orthonormal_span,
    polyline,
    sample_simplices,
    scatter_weights,
)
from lossatlas.probes.subspace import dirichlet_samples
from lossatlas.seeding import derive_seed, make_generator

__all__ = [
    "Connector",
    "ConnectorOptions",
    "Tunnel",
    "m_connector",
    "projection_onto_complement",
    "tunnel",
]

Split = tuple[Tensor, Tensor]

# The subdivision connector optimises 2^(m+1) - m - 2 points; beyond this it stops being a probe.
_MAX_FACE_POINTS = 256
# |Q^T Q - I| above this means the caller's basis is not orthonormal.
_ORTHONORMAL_TOL = 1e-4


class ConnectorOptions(StrictModel):
    """How tunnels and m-connectors are optimised, evaluated and sampled.

    The defaults run in seconds on MNIST-1D MLPs (see the module docstring).
    """

    points: int = Field(9, ge=1, description="tunnel split points k, at t = i / (k + 1)")
    epochs: int = Field(5, ge=0, description="passes over the train split per point")
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="adam is re-projected after every step; give it a smaller lr (1e-3)"
    )
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum, or Adam beta1")
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(kind="cosine"),
        description="LR schedule; cosine decay lets the points settle in few epochs",
    )
    path_resolution: int = Field(8, ge=1, description="evaluation points per tunnel segment")
    dirichlet_samples: int = Field(64, ge=1, description="samples evaluated on a connector")
    shape: Shape = Field(
        "star",
        description="m-connector: cone (centroid; simplices on the facets), star (centroid; "
        "segments to the optima) or subdivision (every face barycentre optimised)",
    )
    method: Literal["projected", "benton"] = Field(
        "projected", description="m-connector: projected gradient, or Benton et al.'s simplex"
    )
    benton_volume: float = Field(
        1e-3, ge=0.0, description="weight of the -log(volume) term of the benton method"
    )
    benton_samples: int = Field(4, gt=0, description="Dirichlet samples per step (benton)")
    eval_batch_size: int = Field(2048, gt=0, description="samples per evaluation forward pass")
    seed: int = 0


# --------------------------------------------------------------------------- projection


def projection_onto_complement(basis: Tensor) -> Callable[[Tensor], Tensor]:
    """``g (K, D) -> g - Q (Q^T g)``: the projection onto the complement of ``span(Q)``.

    Args:
        basis: ``(D, m)`` orthonormal columns ``Q`` (a unit vector ``(D,)`` is the ``m = 1``
            case, the tunnel's ``u``). Use ``_simplex.orthonormal_span`` to build one from
            optima; :attr:`Connector.span_basis` is one.

    Returns:
        A function for ``fit_members(grad_transform=...)``; it works row-wise on ``(K, D)``
        (and on a single ``(D,)`` vector), in the input's dtype and device.
    """
    q = basis.detach().reshape(basis.shape[0], -1)
    gram = q.T.to(torch.float64) @ q.to(torch.float64)
    if not torch.allclose(gram, torch.eye(q.shape[1], dtype=torch.float64), atol=_ORTHONORMAL_TOL):
        raise ValueError("basis must have orthonormal columns (Q^T Q = I)")
    cache: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    def project(g: Tensor) -> Tensor:
        key = (g.dtype, g.device)
        if key not in cache:
            cache[key] = q.to(dtype=g.dtype, device=g.device)
        qq = cache[key]
        return g - (g @ qq) @ qq.T

    return project


# --------------------------------------------------------------------------- results


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@dataclass(eq=False, repr=False)
class Tunnel:
    """A tunnel between two optima and what was measured along it.

    Attributes:
        endpoints: ``(2, D)``: ``theta_a``, ``theta_b``.
        t_points: ``(k,)`` float64 positions ``i / (k + 1)`` of the split points.
        line_points: ``(k, D)`` the split points on the straight segment (the start points).
        points: ``(k, D)`` the optimised split points.
        deviations: ``(k, D)`` ``points - line_points``; orthogonal to ``theta_b - theta_a``.
        cosines: ``(k, k)`` cosine between deviations (NaN where a deviation is 0).
        blocks: ``within_first`` / ``within_second`` / ``across``: mean off-diagonal cosine
            within the first ``ceil(k / 2)`` split points, within the rest, and between the two
            groups (NaN where a group has fewer than 2 points, or is empty).
        path_t: ``(P,)`` positions in [0, 1], ``P = (k + 1) * path_resolution + 1``; each
            segment gets ``path_resolution`` steps and every node is one of the positions.
        loss_line, acc_line: split -> ``(P,)`` along the straight path ``(1 - t) a + t b``.
        loss_tunnel, acc_tunnel: split -> ``(P,)`` along the tunnel.
        disagreement_a_line, disagreement_b_line: ``(P,)`` fraction of ``disagreement_split``
            samples whose predicted label differs from endpoint a's / b's, along the line.
        disagreement_a_tunnel, disagreement_b_tunnel: ``(P,)`` the same along the tunnel.
        disagreement_endpoints: the fraction on which the two endpoints disagree.
        disagreement_split: the split the disagreements were measured on.
        history: ``"train_loss"`` / ``"train_acc"`` -> ``(k, epochs + 1)`` of the split points
            during optimisation (column 0 is on the line).
        options: the options used.
    """

    endpoints: Tensor
    t_points: Tensor
    line_points: Tensor
    points: Tensor
    deviations: Tensor
    cosines: Tensor
    blocks: dict[str, float]
    path_t: Tensor
    loss_line: dict[str, Tensor]
    acc_line: dict[str, Tensor]
    loss_tunnel: dict[str, Tensor]
    acc_tunnel: dict[str, Tensor]
    disagreement_a_line: Tensor
    disagreement_b_line: Tensor
    disagreement_a_tunnel: Tensor
    disagreement_b_tunnel: Tensor
    disagreement_endpoints: float
    disagreement_split: str
    history: dict[str, Tensor]
    options: ConnectorOptions = field(default_factory=ConnectorOptions)

    def __repr__(self) -> str:
        k, d = self.points.shape
        return f"Tunnel(points={k}, path={self.path_t.shape[0]}, D={d})"

    @property
    def node_t(self) -> Tensor:
        """``(k + 2,)`` positions of the tunnel's nodes: 0, ``t_points``, 1."""
        one = self.t_points.new_ones(1)
        return torch.cat([one * 0, self.t_points, one])

    @property
    def nodes(self) -> Tensor:
        """``(k + 2, D)`` the tunnel's nodes: ``theta_a``, the optimised points, ``theta_b``."""
        return torch.cat([self.endpoints[:1], self.points, self.endpoints[1:]])

    @property
    def middle_index(self) -> int:
        """Index of the split point nearest ``t = 0.5`` (the first of two equally near)."""
        return int((self.t_points - 0.5).abs().argmin())

    @property
    def middle(self) -> Tensor:
        """``(D,)`` the optimised split point nearest ``t = 0.5`` (for curvature counts)."""
        return self.points[self.middle_index]

    def path(self, t: Tensor) -> Tensor:
        """``(P, D)`` tunnel points at positions ``t`` (P,); exact at the nodes."""
        return polyline(self.nodes, self.node_t, t)

    def line(self, t: Tensor) -> Tensor:
        """``(P, D)`` straight-path points ``(1 - t) a + t b``; exact at ``t = 0`` and 1."""
        return _segment(self.endpoints[0], self.endpoints[1], t)

    def summary(self, split: str = "train") -> dict[str, float]:
        """Headline numbers on ``split``: max loss of each path, barriers (max minus the mean
        endpoint loss), block cosines and the disagreement at the path's middle."""
        loss_line, loss_tunnel = self.loss_line[split], self.loss_tunnel[split]
        ends = 0.5 * float(loss_line[0] + loss_line[-1])
        mid = int((self.path_t - 0.5).abs().argmin())
        return {
            "loss_endpoints": ends,
            "loss_line_max": float(loss_line.max()),
            "loss_tunnel_max": float(loss_tunnel.max()),
            "barrier_line": float(loss_line.max()) - ends,
            "barrier_tunnel": float(loss_tunnel.max()) - ends,
            "acc_line_min": float(self.acc_line[split].min()),
            "acc_tunnel_min": float(self.acc_tunnel[split].min()),
            "disagreement_endpoints": self.disagreement_endpoints,
            "disagreement_a_line_mid": float(self.disagreement_a_line[mid]),
            "disagreement_a_tunnel_mid": float(self.disagreement_a_tunnel[mid]),
            "disagreement_b_tunnel_mid": float(self.disagreement_b_tunnel[mid]),
            **{f"cosine_{k}": v for k, v in self.blocks.items()},
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named numpy arrays for the store (metrics as ``{metric}_{path}_{split}``)."""
        arrays = {
            "endpoints": _numpy(self.endpoints),
            "t_points": _numpy(self.t_points),
            "points": _numpy(self.points),
            "cosines": _numpy(self.cosines),
            "path_t": _numpy(self.path_t),
            "disagreement_a_line": _numpy(self.disagreement_a_line),
            "disagreement_b_line": _numpy(self.disagreement_b_line),
            "disagreement_a_tunnel": _numpy(self.disagreement_a_tunnel),
            "disagreement_b_tunnel": _numpy(self.disagreement_b_tunnel),
        }
        for name, per_split in (
            ("loss_line", self.loss_line),
            ("acc_line", self.acc_line),
            ("loss_tunnel", self.loss_tunnel),
            ("acc_tunnel", self.acc_tunnel),
        ):
            arrays.update({f"{name}_{s}": _numpy(v) for s, v in per_split.items()})
        arrays.update({f"history_{k}": _numpy(v) for k, v in self.history.items()})
        return arrays


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
            "optima": _numpy(self.optima),
            "points": _numpy(self.points),
            "span_basis": _numpy(self.span_basis),
            "samples_simplices": _numpy(self.samples_simplices),
            "samples_weights": _numpy(self.samples_weights),
        }
        for name in ("samples", "hull", "optima", "centroid", "points"):
            for metric in ("loss", "acc"):
                per_split: dict[str, Tensor] = getattr(self, f"{metric}_{name}")
                arrays.update({f"{metric}_{name}_{s}": _numpy(v) for s, v in per_split.items()})
        arrays.update({f"history_{k}": _numpy(v) for k, v in self.history.items()})
        return arrays


# --------------------------------------------------------------------------- tunnel


def tunnel(
    model: nn.Module,
    data: Any,
    theta_a: Tensor,
    theta_b: Tensor,
    *,
    options: ConnectorOptions | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    loss_fn: LossFn | None = None,
) -> Tunnel:
    """Optimise a tunnel between ``theta_a`` and ``theta_b`` (each ``(D,)``), paper A3.

    All ``k = options.points`` split points are trained as one population with
    ``grad_transform = g - (g . u) u``; each gets its own data order. Then loss/accuracy along
    the straight path and the tunnel (``path_resolution`` steps per segment) on train and
    test, the deviation cosines, and the label disagreement with each endpoint.

    Args:
        model: any ``nn.Module`` (a template; its parameters are not changed).
        data: ``(X, y)``, a ``DataLoader`` or a lossatlas ``Dataset``.
        theta_a, theta_b: ``(D,)`` the optima (they decide dtype and device).
        options: :class:`ConnectorOptions`.
        buffers: name -> tensor used at every point (default: the module's).
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.

    Returns:
        A :class:`Tunnel`.
    """
    with _modes_restored(model):
        return _tunnel(
            model, data, theta_a, theta_b, options or ConnectorOptions(), buffers, loss_fn
        )


def _tunnel(
    model: nn.Module,
    data: Any,
    theta_a: Tensor,
    theta_b: Tensor,
    opts: ConnectorOptions,
    buffers: Mapping[str, Tensor] | None,
    loss_fn: LossFn | None,
) -> Tunnel:
    space = ParamSpace(model)
    for name, theta in (("theta_a", theta_a), ("theta_b", theta_b)):
        if theta.shape != (space.dim,):
            raise ValueError(f"{name} must have shape ({space.dim},), got {tuple(theta.shape)}")
    ends = _as_optima(torch.stack([theta_a.detach(), theta_b.detach()]), space, "theta_a/b")
    a, b = ends[0], ends[1]
    x_train, y_train, splits = _prepare_data(data, a)
    k = opts.points
    t_points = torch.arange(1, k + 1, dtype=torch.float64) / (k + 1)
    line_points = _segment(a, b, t_points)
    population = _optimise_points(
        space,
        line_points,
        orthonormal_span(ends),
        x_train,
        y_train,
        opts,
        member_ids=torch.arange(k),
        seed=derive_seed(opts.seed, "tunnel"),
        buffers=buffers,
        loss_fn=loss_fn,
    )
    points = population.params
    deviations = points - line_points
    cosines = _cosines(deviations)

    # Both paths at the same positions: each segment in path_resolution steps, nodes included.
    node_t = torch.cat([t_points.new_zeros(1), t_points, t_points.new_ones(1)])
    steps = torch.arange(opts.path_resolution, dtype=torch.float64) / opts.path_resolution
    gaps = node_t[1:] - node_t[:-1]
    path_t = torch.cat([(node_t[:-1, None] + gaps[:, None] * steps).reshape(-1), node_t[-1:]])
    nodes = torch.cat([a[None], points, b[None]])
    both = torch.cat([_segment(a, b, path_t), polyline(nodes, node_t, path_t)])  # (2P, D)
    n_path = path_t.shape[0]

    loss, acc = _evaluate(space, both, splits, buffers, loss_fn, opts)
    dis_split = "test" if "test" in splits else "train"
    labels = predict_points(
        space,
        both,
        splits[dis_split][0],
        buffers=buffers,
        sample_chunk=opts.eval_batch_size,
    ).argmax(dim=-1)  # (2P, N)
    # The line's first and last points *are* theta_a and theta_b, bit for bit.
    label_a, label_b = labels[0], labels[n_path - 1]
    dis_a = (labels != label_a).to(torch.float64).mean(dim=1)
    dis_b = (labels != label_b).to(torch.float64).mean(dim=1)

    return Tunnel(
        endpoints=ends,
        t_points=t_points,
        line_points=line_points,
        points=points,
        deviations=deviations,
        cosines=cosines,
        blocks=_blocks(cosines),
        path_t=path_t,
        loss_line={s: v[:n_path] for s, v in loss.items()},
        acc_line={s: v[:n_path] for s, v in acc.items()},
        loss_tunnel={s: v[n_path:] for s, v in loss.items()},
        acc_tunnel={s: v[n_path:] for s, v in acc.items()},
        disagreement_a_line=dis_a[:n_path],
        disagreement_b_line=dis_b[:n_path],
        disagreement_a_tunnel=dis_a[n_path:],
        disagreement_b_tunnel=dis_b[n_path:],
        disagreement_endpoints=float((label_a != label_b).to(torch.float64).mean()),
        disagreement_split=dis_split,
        history=population.history,
        options=opts,
    )


# --------------------------------------------------------------------------- m-connector


def m_connector(
    model: nn.Module,
    data: Any,
    optima: Tensor,
    *,
    options: ConnectorOptions | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    loss_fn: LossFn | None = None,
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
        data: ``(X, y)``, a ``DataLoader`` or a lossatlas ``Dataset``.
        optima: ``(m + 1, D)``, ``m >= 1``, affinely independent.
        options: :class:`ConnectorOptions`.
        buffers: name -> tensor used at every point (default: the module's).
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.

    Returns:
        A :class:`Connector`.
    """
    with _modes_restored(model):
        return _m_connector(model, data, optima, options or ConnectorOptions(), buffers, loss_fn)


def _m_connector(
    model: nn.Module,
    data: Any,
    optima: Tensor,
    opts: ConnectorOptions,
    buffers: Mapping[str, Tensor] | None,
    loss_fn: LossFn | None,
) -> Connector:
    space = ParamSpace(model)
    verts = _as_optima(optima.detach(), space, "optima")
    m = verts.shape[0] - 1
    if m < 1:
        raise ValueError(f"need at least 2 optima, got {verts.shape[0]}")
    if face_count(m, opts.shape) > _MAX_FACE_POINTS:
        raise ValueError(
            f"shape='subdivision' with m={m} would optimise {face_count(m, opts.shape)} points; "
            "use m <= 7 or another shape"
        )
    x_train, y_train, splits = _prepare_data(data, verts)
    basis = orthonormal_span(verts)
    sets = face_sets(m, opts.shape)
    bary = torch.zeros(len(sets), m + 1, dtype=torch.float64)
    for i, s in enumerate(sets):
        bary[i, list(s)] = 1.0 / len(s)
    start_points = bary.to(verts) @ verts
    seed = derive_seed(opts.seed, "connector")
    if opts.method == "projected":
        population = _optimise_points(
            space,
            start_points,
            basis,
            x_train,
            y_train,
            opts,
            member_ids=torch.arange(len(sets)),
            seed=seed,
            buffers=buffers,
            loss_fn=loss_fn,
        )
        points, history = population.params, population.history
    else:
        points, history = _benton(
            space,
            verts,
            start_points,
            x_train,
            y_train,
            opts,
            seed=seed,
            buffers=buffers,
            loss_fn=loss_fn,
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
    loss, acc = _evaluate(space, everything, splits, buffers, loss_fn, opts)
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
        method=opts.method,
        options=opts,
    )


# --------------------------------------------------------------------------- optimisation


def _optimise_points(
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


def _benton(
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


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _modes_restored(model: nn.Module) -> Iterator[None]:
    """Give the user's module back with every submodule's train/eval flag as it was (the
    training loop switches the whole module to train mode)."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _as_optima(optima: Tensor, space: ParamSpace, what: str) -> Tensor:
    if optima.dim() != 2 or optima.shape[1] != space.dim:
        raise ValueError(f"{what} must have shape (n, {space.dim}), got {tuple(optima.shape)}")
    if not torch.isfinite(optima).all():
        raise ValueError(f"{what} contain NaN or inf")
    return optima.clone()


def _prepare_data(data: Any, like: Tensor) -> tuple[Tensor, Tensor, dict[str, Split]]:
    """Train tensors plus the ``train``/``test`` splits, on ``like``'s device and dtype."""
    x_train, y_train, splits = _resolve_data(data)

    def move(x: Tensor, y: Tensor) -> Split:
        dtype = like.dtype if x.is_floating_point() else None
        return x.to(device=like.device, dtype=dtype), y.to(like.device)

    kept = {s: move(*splits[s]) for s in ("train", "test") if s in splits}
    kept.setdefault("train", move(x_train, y_train))
    x, y = kept["train"]
    return x, y, kept


def _segment(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """``(P, D)`` points ``(1 - t) a + t b``: exactly ``a`` at 0 and ``b`` at 1."""
    tt = t.to(a.dtype).unsqueeze(1)
    return (1 - tt) * a + tt * b


def _cosines(deviations: Tensor) -> Tensor:
    """``(k, k)`` cosines between rows; NaN in rows/columns of a zero deviation."""
    dev = deviations.to(torch.float64)
    norms = dev.norm(dim=1)
    unit = dev / torch.where(norms > 0, norms, torch.nan).unsqueeze(1)
    return (unit @ unit.T).clamp(-1.0, 1.0)


def _blocks(cosines: Tensor) -> dict[str, float]:
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


def _evaluate(
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
