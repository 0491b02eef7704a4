"""Tunnels between two optima (paper A3): split points optimised normal to the segment."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lossatlas.data.batches import Batch, BatchAdapter
from lossatlas.evaluate import LossFn, predict_points
from lossatlas.params import ParamSpace
from lossatlas.probes._simplex import orthonormal_span, polyline
from lossatlas.probes.paths._fit import (
    Convergence,
    as_optima,
    blocks,
    deviation_cosines,
    evaluate_all,
    joint_path_points,
    labels_comparable,
    modes_restored,
    optimise_points,
    prepare_data,
    segment,
    to_numpy,
)
from lossatlas.probes.paths.options import ConnectorOptions
from lossatlas.seeding import derive_seed

__all__ = ["Tunnel", "tunnel"]


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
            during optimisation (column 0 is on the line; NaN after a point stopped).
        convergence: how close the split points came to the endpoints' mean train loss
            (:class:`~lossatlas.probes.paths._fit.Convergence`).
        joint_points: ``(k, D)`` the split points optimised jointly along the path
            (``options.joint``), or ``None``.
        loss_joint, acc_joint: split -> ``(P,)`` along the joint path (empty without one).
        joint_history: ``"path_max_loss"`` -> ``(epochs + 1,)`` of the joint optimisation.
        joint_stopped_at: the epoch the joint optimisation stopped at (-1: the cap, or none).
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
    convergence: Convergence
    joint_points: Tensor | None = None
    loss_joint: dict[str, Tensor] = field(default_factory=dict)
    acc_joint: dict[str, Tensor] = field(default_factory=dict)
    joint_history: dict[str, Tensor] = field(default_factory=dict)
    joint_stopped_at: int = -1
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
        return segment(self.endpoints[0], self.endpoints[1], t)

    def summary(self, split: str = "train") -> dict[str, float]:
        """Headline numbers on ``split``: max loss of each path, barriers (max minus the mean
        endpoint loss), block cosines and the disagreement at the path's middle."""
        loss_line, loss_tunnel = self.loss_line[split], self.loss_tunnel[split]
        ends = 0.5 * float(loss_line[0] + loss_line[-1])
        mid = int((self.path_t - 0.5).abs().argmin())
        joint = self.loss_joint.get(split)
        return {
            "loss_endpoints": ends,
            "loss_line_max": float(loss_line.max()),
            "loss_tunnel_max": float(loss_tunnel.max()),
            "barrier_line": float(loss_line.max()) - ends,
            "barrier_tunnel": float(loss_tunnel.max()) - ends,
            "barrier_joint": float(joint.max()) - ends if joint is not None else float("nan"),
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
            "endpoints": to_numpy(self.endpoints),
            "t_points": to_numpy(self.t_points),
            "points": to_numpy(self.points),
            "cosines": to_numpy(self.cosines),
            "path_t": to_numpy(self.path_t),
            "disagreement_a_line": to_numpy(self.disagreement_a_line),
            "disagreement_b_line": to_numpy(self.disagreement_b_line),
            "disagreement_a_tunnel": to_numpy(self.disagreement_a_tunnel),
            "disagreement_b_tunnel": to_numpy(self.disagreement_b_tunnel),
        }
        for name, per_split in (
            ("loss_line", self.loss_line),
            ("acc_line", self.acc_line),
            ("loss_tunnel", self.loss_tunnel),
            ("acc_tunnel", self.acc_tunnel),
        ):
            arrays.update({f"{name}_{s}": to_numpy(v) for s, v in per_split.items()})
        arrays.update({f"history_{k}": to_numpy(v) for k, v in self.history.items()})
        arrays["point_gaps"] = to_numpy(self.convergence.gaps)
        if self.joint_points is not None:
            arrays["joint_points"] = to_numpy(self.joint_points)
            for name, per_split in (("loss_joint", self.loss_joint), ("acc_joint", self.acc_joint)):
                arrays.update({f"{name}_{s}": to_numpy(v) for s, v in per_split.items()})
            arrays.update({f"joint_{k}": to_numpy(v) for k, v in self.joint_history.items()})
        return arrays


def tunnel(
    model: nn.Module,
    data: Any,
    theta_a: Tensor,
    theta_b: Tensor,
    *,
    options: ConnectorOptions | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
) -> Tunnel:
    """Optimise a tunnel between ``theta_a`` and ``theta_b`` (each ``(D,)``), paper A3.

    All ``k = options.points`` split points are trained as one population with
    ``grad_transform = g - (g . u) u``; each gets its own data order (the paper's independent
    recipe). With ``options.tolerance`` each point trains until its train loss is within that
    tolerance of the endpoints' mean (``options.epochs`` is then a cap); the gap reached is in
    ``convergence``. With ``options.joint`` the same points are also optimised jointly along
    the segments, under the same constraints. Then loss/accuracy along the straight path, the
    tunnel (and the joint path), ``path_resolution`` steps per segment, on train and test, the
    deviation cosines, and the label disagreement with each endpoint.

    Args:
        model: any ``nn.Module`` (a template; its parameters are not changed).
        data: ``(X, y)``, a ``DataLoader`` (of ``(x, y)`` or of dict batches) or a lossatlas
            ``Dataset``; read whole into memory (every point draws its own data order).
        theta_a, theta_b: ``(D,)`` the optima (they decide dtype and device).
        options: :class:`ConnectorOptions`.
        buffers: name -> tensor used at every point (default: the module's).
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.
        adapter: how to read the batches, call the model and score its outputs
            (:class:`~lossatlas.data.batches.BatchAdapter`). Without class labels (a
            regression target) the accuracies and label disagreements are NaN.

    Returns:
        A :class:`Tunnel`.
    """
    with modes_restored(model):
        return _tunnel(
            model, data, theta_a, theta_b, options or ConnectorOptions(), buffers, loss_fn, adapter
        )


def _tunnel(
    model: nn.Module,
    data: Any,
    theta_a: Tensor,
    theta_b: Tensor,
    opts: ConnectorOptions,
    buffers: Mapping[str, Tensor] | None,
    loss_fn: LossFn | None,
    adapter: BatchAdapter | None,
) -> Tunnel:
    space = ParamSpace(model)
    for name, theta in (("theta_a", theta_a), ("theta_b", theta_b)):
        if theta.shape != (space.dim,):
            raise ValueError(f"{name} must have shape ({space.dim},), got {tuple(theta.shape)}")
    ends = as_optima(torch.stack([theta_a.detach(), theta_b.detach()]), space, "theta_a/b")
    a, b = ends[0], ends[1]
    train, splits = prepare_data(data, a, adapter, loss_fn)
    k = opts.points
    t_points = torch.arange(1, k + 1, dtype=torch.float64) / (k + 1)
    line_points = segment(a, b, t_points)
    end_loss, _ = evaluate_all(space, ends, {"train": train}, buffers, opts)
    reference = float(end_loss["train"].mean())
    basis = orthonormal_span(ends)
    population = optimise_points(
        space,
        line_points,
        basis,
        train,
        opts,
        member_ids=torch.arange(k),
        seed=derive_seed(opts.seed, "tunnel"),
        buffers=buffers,
        reference=reference,
    )
    points = population.params
    final_loss, _ = evaluate_all(space, points, {"train": train}, buffers, opts)
    convergence = Convergence.of(
        final_loss["train"], reference, opts.tolerance, population.stopped_at
    )
    joint_points: Tensor | None = None
    joint_history: dict[str, Tensor] = {}
    joint_stopped = -1
    if opts.joint:
        joint_points, joint_history, joint_stopped = joint_path_points(
            space,
            a,
            b,
            line_points,
            basis,
            train,
            opts,
            seed=derive_seed(opts.seed, "tunnel", "joint"),
            buffers=buffers,
            reference=reference,
        )
    deviations = points - line_points
    cosines = deviation_cosines(deviations)

    # Both paths at the same positions: each segment in path_resolution steps, nodes included.
    node_t = torch.cat([t_points.new_zeros(1), t_points, t_points.new_ones(1)])
    steps = torch.arange(opts.path_resolution, dtype=torch.float64) / opts.path_resolution
    gaps = node_t[1:] - node_t[:-1]
    path_t = torch.cat([(node_t[:-1, None] + gaps[:, None] * steps).reshape(-1), node_t[-1:]])
    nodes = torch.cat([a[None], points, b[None]])
    paths = [segment(a, b, path_t), polyline(nodes, node_t, path_t)]
    if joint_points is not None:
        paths.append(polyline(torch.cat([a[None], joint_points, b[None]]), node_t, path_t))
    n_path = path_t.shape[0]
    every = torch.cat(paths)  # (2P or 3P, D)
    loss, acc = evaluate_all(space, every, splits, buffers, opts)
    dis_split = "test" if "test" in splits else "train"
    dis_a, dis_b, dis_ends = _disagreements(
        space, every[: 2 * n_path], splits[dis_split], buffers, opts
    )

    return Tunnel(
        endpoints=ends,
        t_points=t_points,
        line_points=line_points,
        points=points,
        deviations=deviations,
        cosines=cosines,
        blocks=blocks(cosines),
        path_t=path_t,
        loss_line={s: v[:n_path] for s, v in loss.items()},
        acc_line={s: v[:n_path] for s, v in acc.items()},
        loss_tunnel={s: v[n_path : 2 * n_path] for s, v in loss.items()},
        acc_tunnel={s: v[n_path : 2 * n_path] for s, v in acc.items()},
        disagreement_a_line=dis_a[:n_path],
        disagreement_b_line=dis_b[:n_path],
        disagreement_a_tunnel=dis_a[n_path:],
        disagreement_b_tunnel=dis_b[n_path:],
        disagreement_endpoints=dis_ends,
        disagreement_split=dis_split,
        history=population.history,
        convergence=convergence,
        joint_points=joint_points,
        loss_joint={s: v[2 * n_path :] for s, v in loss.items()}
        if joint_points is not None
        else {},
        acc_joint={s: v[2 * n_path :] for s, v in acc.items()} if joint_points is not None else {},
        joint_history=joint_history,
        joint_stopped_at=joint_stopped,
        options=opts,
    )


def _disagreements(
    space: ParamSpace,
    both: Tensor,
    batch: Batch,
    buffers: Mapping[str, Tensor] | None,
    opts: ConnectorOptions,
) -> tuple[Tensor, Tensor, float]:
    """``(P2,)`` fractions of ``batch``'s samples whose predicted label at each of the line's
    and tunnel's points ``both`` (P2, D) differs from endpoint a's and from b's, and the
    endpoints' own disagreement; NaN when the target holds no class labels (regression)."""
    if not labels_comparable(batch):
        nan = torch.full((both.shape[0],), math.nan, dtype=torch.float64)
        return nan, nan.clone(), math.nan
    labels = predict_points(
        space, both, batch, buffers=buffers, sample_chunk=opts.eval_batch_size
    ).argmax(dim=-1)  # (P2, N)
    n_path = both.shape[0] // 2
    # The line's first and last points *are* theta_a and theta_b, bit for bit.
    label_a, label_b = labels[0], labels[n_path - 1]
    dis_a = (labels != label_a).to(torch.float64).mean(dim=1)
    dis_b = (labels != label_b).to(torch.float64).mean(dim=1)
    return dis_a, dis_b, float((label_a != label_b).to(torch.float64).mean())
