"""A1 (b): tunnels between optima on different wedges, split points projected normal to the
segment (PAPERS.md A3 on the toy). Claim ``toy.tunnel``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lossatlas.analysis.statistics import all_of, control, decide, equal_lag_contrast
from lossatlas.claims import Claim, Decision
from lossatlas.seeding import make_generator
from lossatlas.studies.wedges.config import ToyConfig
from lossatlas.studies.wedges.toy._common import (
    DTYPE,
    PAPER_SETUP,
    ToyResult,
    adam_descent,
    as_numpy,
    cosine_lr,
    main_landscape,
    projected_descent,
    with_threads,
)
from lossatlas.studies.wedges.toy.landscape import WedgeLandscape


def _distinct_starts(
    landscape: WedgeLandscape, pairs: int, generator: torch.Generator, scale: float
) -> Tensor:
    """(pairs, 2, D) random starts whose two members lie nearest to different wedges.

    Full-space descent on a distance moves straight to the nearest wedge, so different nearest
    wedges at the start give optima on different wedges. A pair that shares its nearest wedge
    is redrawn (rare: probability 1 / C(D, n) for equal widths).
    """
    if landscape.wedge_count < 2:
        raise ValueError("a tunnel needs at least two wedges (0 < n_long < dim)")
    starts = landscape.sample_init(2 * pairs, generator, scale).view(pairs, 2, -1)
    for _ in range(1000):
        wedges = landscape.nearest_wedge(starts)
        same = (wedges[:, 0] == wedges[:, 1]).all(-1)
        if not bool(same.any()):
            return starts
        fresh = landscape.sample_init(2 * int(same.sum()), generator, scale)
        starts[same] = fresh.view(-1, 2, landscape.dim)
    raise RuntimeError("could not draw two starts nearest to different wedges")


def _block_means(cos: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cosine within and across the two halves, per trial: (T, k, k) -> (T,), (T,).

    First block: split points with ``t < 1/2``; second: ``t > 1/2``; a point at exactly
    ``t = 1/2`` (odd ``k``) belongs to neither. Within-block pairs exclude the diagonal.
    """
    first = positions < 0.5
    second = positions > 0.5
    same = (first[:, None] & first[None, :]) | (second[:, None] & second[None, :])
    same = same & ~torch.eye(len(positions), dtype=torch.bool)
    across = first[:, None] & second[None, :]
    nan = torch.full(cos.shape[:1], math.nan, dtype=cos.dtype)
    within_mean = cos[:, same].mean(-1) if bool(same.any()) else nan
    across_mean = cos[:, across].mean(-1) if bool(across.any()) else nan
    return within_mean, across_mean


def _dense_path(nodes: Tensor, resolution: int) -> Tensor:
    """``(T, S, D)``: ``resolution`` points per segment of the polylines ``nodes`` (T, k+2, D),
    then the last node; ``S = (k + 1) * resolution + 1``."""
    frac = torch.arange(resolution, dtype=nodes.dtype) / resolution
    segments = (
        nodes[:, :-1, None, :]
        + frac[None, None, :, None] * (nodes[:, 1:] - nodes[:, :-1])[:, :, None, :]
    )
    pairs, dim = nodes.shape[0], nodes.shape[-1]
    return torch.cat([segments.reshape(pairs, -1, dim), nodes[:, -1:]], dim=1)


def joint_descent(
    loss: Any,
    theta1: Tensor,
    theta2: Tensor,
    start: Tensor,
    normal: Tensor,
    generator: torch.Generator,
    *,
    steps: int,
    lr: float,
) -> Tensor:
    """The split points ``start`` (T, k, D) optimised jointly along their whole path.

    Every step draws one point uniformly on each of the ``k + 1`` segments of every path
    (seeded), and moves the split points with the gradient of the summed loss at those points,
    projected onto the hyperplane normal to ``u`` (``normal`` (T, D)): the same constraint as
    the paper's independent recipe, and the same cosine-decayed plain gradient descent.
    """
    x = start.detach().clone()
    u = normal[:, None, :]
    pairs, k = x.shape[:2]
    for step in range(steps):
        w = torch.rand(pairs, k + 1, 1, generator=generator, dtype=x.dtype)
        x.requires_grad_(True)
        nodes = torch.cat([theta1[:, None], x, theta2[:, None]], dim=1)
        samples = nodes[:, :-1] + w * (nodes[:, 1:] - nodes[:, :-1])
        (grad,) = torch.autograd.grad(loss(samples).sum(), x)
        grad = grad - (grad * u).sum(-1, keepdim=True) * u
        x = (x - cosine_lr(lr, step, steps) * grad).detach()
    return x


def decide_toy_tunnel(
    ratios: list[float], contrasts: list[float], barrier_fraction: float
) -> tuple[Decision, Decision, Decision]:
    """``toy.tunnel``: the paper's statement has two parts, both over pairs of optima: the
    tunnel is low-loss (barrier ratio below ``barrier_fraction``) and its deviations form two
    blocks (equal-lag contrast above 0). Returns the claim's decision, then each part's."""
    low = decide(
        ratios,
        barrier_fraction,
        "below",
        "tunnel barrier / straight barrier on the densely sampled path (paper's recipe)",
        control=control(
            "the same ratio for the straight path itself",
            [1.0] * len(ratios),
            barrier_fraction,
            "below",
        ),
    )
    blocks = decide(
        contrasts,
        0.0,
        "above",
        "equal-lag contrast of the deviation cosines (within a half minus across the midpoint)",
    )
    return Decision(all_of([low.verdict, blocks.verdict]), low.evidence), low, blocks


@with_threads
def tunnel(cfg: ToyConfig, seed: int) -> ToyResult:
    """(b) Low-loss tunnels between optima on different wedges (PAPERS.md A3 on the toy).

    For each of ``T = cfg.tunnel_trials`` pairs: descend two random starts to optima
    ``θ1, θ2`` on different wedges; split the segment at ``t_j = j / (k + 1)``, ``j = 1..k``;
    move each split point by projected gradient descent inside the hyperplane normal to
    ``u = (θ2 − θ1)/|θ2 − θ1|``; join the points by straight segments.

    Because every deviation is normal to ``u``, split point ``j`` stays at position ``t_j``
    along the segment, so the straight and tunnel paths share one position axis.

    Arrays: ``tunnel_position`` (S,), ``tunnel_straight_loss`` (T, S), ``tunnel_path_loss``
    (T, S) with ``S = (k + 1) * path_resolution + 1``; ``tunnel_split_position`` (k,),
    ``tunnel_split_loss`` (T, k), ``tunnel_deviation`` (T, k, D), ``tunnel_deviation_dot_u``
    (T, k), ``tunnel_cosine`` (T, k, k), ``tunnel_endpoints`` (T, 2, D),
    ``tunnel_endpoint_wedges`` (T, 2, n), ``tunnel_straight_barrier`` / ``tunnel_path_barrier``
    (T,); the slice picture: ``tunnel_slice_a`` (G,), ``tunnel_slice_b`` (G,),
    ``tunnel_slice_loss`` (G, G), ``tunnel_slice_endpoints`` (2, 2), ``tunnel_slice_path``
    (k + 2, 2).
    """
    landscape = main_landscape(cfg, seed)
    generator = make_generator(seed, "toy", "tunnel")
    pairs, k, dim = cfg.tunnel_trials, cfg.split_points, landscape.dim
    scale = cfg.init_scale

    starts = _distinct_starts(landscape, pairs, generator, scale)
    ends = adam_descent(
        landscape.loss, starts.view(2 * pairs, dim), steps=cfg.steps, lr=cfg.lr * scale
    ).view(pairs, 2, dim)
    wedges = landscape.nearest_wedge(ends)  # (T, 2, n)
    different = ~(wedges[:, 0] == wedges[:, 1]).all(-1)  # (T,)
    theta1, theta2 = ends[:, 0], ends[:, 1]
    delta = theta2 - theta1
    u = delta / delta.norm(dim=-1, keepdim=True)

    split_t = torch.arange(1, k + 1, dtype=DTYPE) / (k + 1)  # (k,)
    line = theta1[:, None, :] + split_t[None, :, None] * delta[:, None, :]  # (T, k, D)
    points = projected_descent(
        landscape.loss, line, u, steps=cfg.tunnel_steps, lr=cfg.tunnel_lr * scale
    )
    deviation = points - line
    dev_dot_u = (deviation * u[:, None, :]).sum(-1)  # (T, k), ≈ 0 by construction
    unit_dev = deviation / deviation.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    cosine = unit_dev @ unit_dev.transpose(1, 2)  # (T, k, k)
    within, across = _block_means(cosine, split_t)

    joint = joint_descent(
        landscape.loss,
        theta1,
        theta2,
        line,
        u,
        make_generator(seed, "toy", "tunnel", "joint"),
        steps=cfg.tunnel_steps,
        lr=cfg.tunnel_lr * scale,
    )
    first_block = math.ceil(k / 2)
    contrasts = [equal_lag_contrast(as_numpy(c), first_block) for c in cosine]

    # Dense sampling: path_resolution samples per segment, then the final endpoint.
    res = cfg.path_resolution
    path = torch.cat([theta1[:, None], points, theta2[:, None]], dim=1)  # (T, k + 2, D)
    dense = _dense_path(path, res)  # (T, S, D)
    joint_dense = _dense_path(torch.cat([theta1[:, None], joint, theta2[:, None]], dim=1), res)
    position = torch.linspace(0.0, 1.0, dense.shape[1], dtype=DTYPE)
    straight = theta1[:, None, :] + position[None, :, None] * delta[:, None, :]
    with torch.no_grad():
        end_loss = landscape.loss(ends).amax(-1)  # (T,)
        straight_loss = landscape.loss(straight)
        path_loss = landscape.loss(dense)
        joint_loss = landscape.loss(joint_dense)
        split_loss = landscape.loss(points)
    straight_barrier = straight_loss.amax(-1) - end_loss
    path_barrier = path_loss.amax(-1) - end_loss
    joint_barrier = joint_loss.amax(-1) - end_loss
    ratio = path_barrier / straight_barrier
    joint_ratio = joint_barrier / straight_barrier

    # A 2-D cut through the origin spanned by the first pair's optima (PAPERS.md A2 style).
    e1 = theta1[0] / theta1[0].norm()
    e2 = theta2[0] - (theta2[0] @ e1) * e1
    e2 = e2 / e2.norm()
    reach = 1.3 * float(torch.maximum(theta1[0].norm(), theta2[0].norm()))
    grid = torch.linspace(-reach, reach, cfg.slice_resolution, dtype=DTYPE)
    plane = grid[None, :, None] * e1 + grid[:, None, None] * e2  # (G_b, G_a, D): rows = b
    with torch.no_grad():
        slice_loss = landscape.loss(plane)
    basis = torch.stack([e1, e2], dim=1)  # (D, 2)

    result = ToyResult()
    result.arrays.update(
        {
            "tunnel_position": as_numpy(position),
            "tunnel_straight_loss": as_numpy(straight_loss),
            "tunnel_path_loss": as_numpy(path_loss),
            "tunnel_joint_loss": as_numpy(joint_loss),
            "tunnel_split_position": as_numpy(split_t),
            "tunnel_split_loss": as_numpy(split_loss),
            "tunnel_deviation": as_numpy(deviation),
            "tunnel_deviation_dot_u": as_numpy(dev_dot_u),
            "tunnel_cosine": as_numpy(cosine),
            "tunnel_endpoints": as_numpy(ends),
            "tunnel_endpoint_wedges": as_numpy(wedges),
            "tunnel_straight_barrier": as_numpy(straight_barrier),
            "tunnel_path_barrier": as_numpy(path_barrier),
            "tunnel_joint_barrier": as_numpy(joint_barrier),
            "tunnel_slice_a": as_numpy(grid),
            "tunnel_slice_b": as_numpy(grid),
            "tunnel_slice_loss": as_numpy(slice_loss),
            "tunnel_slice_endpoints": as_numpy(ends[0] @ basis),
            "tunnel_slice_path": as_numpy(path[0] @ basis),
        }
    )

    mean_ratio = float(ratio.mean())
    within_mean = float(within.nanmean())
    across_mean = float(across.nanmean())
    decision, low, two_blocks = decide_toy_tunnel(
        [float(r) for r in ratio], contrasts, cfg.barrier_fraction
    )
    if not bool(different.all()):  # a pair on one wedge tests nothing
        decision = Decision("inconclusive", decision.evidence)
    figure_names = (
        ["toy_tunnel_loss.png", "toy_tunnel_cosine.png", "toy_slice.png"] if cfg.figures else []
    )
    result.claims.append(
        Claim(
            id="toy.tunnel",
            statement=(
                "optimising split points of the straight segment between two optima inside the "
                "hyperplanes normal to it gives a low-loss tunnel, whose deviations form two "
                "blocks (first half / second half)"
            ),
            paper_value="low-loss tunnel; deviation cosine ≈ 0.6–1 within a block, ≈ 0 across",
            paper_setup=PAPER_SETUP,
            measured={
                "barrier_straight": float(straight_barrier.mean()),
                "max_loss_tunnel": float(path_loss.amax(-1).mean()),
                "barrier_tunnel": float(path_barrier.mean()),
                "barrier_ratio": mean_ratio,
                "barrier_ratio_per_trial": as_numpy(ratio),
                "joint_barrier_ratio_per_trial": as_numpy(joint_ratio),
                "joint_barrier_ratio": float(joint_ratio.mean()),
                "equal_lag_contrast_per_trial": contrasts,
                "low_loss": {"verdict": low.verdict, "ci95": low.evidence.ci95},
                "two_blocks": {"verdict": two_blocks.verdict, "ci95": two_blocks.evidence.ci95},
                "max_loss_split_points": float(split_loss.max()),
                "within_block_cos": within_mean,
                "across_block_cos": across_mean,
                "max_abs_deviation_dot_u": float(dev_dot_u.abs().max()),
                "endpoints_on_different_wedges": bool(different.all()),
                "cos_matrix": as_numpy(cosine.mean(0)),
            },
            holds=decision.holds,
            verdict=decision.verdict,
            evidence=decision.evidence,
            setup=(
                f"toy wedges ({landscape.describe()}); {pairs} pairs of optima (Adam "
                f"{cfg.steps} steps from N(0, {scale:g}^2 I) starts), k = {k} split points, "
                f"projected GD {cfg.tunnel_steps} steps (lr {cfg.tunnel_lr:g} cosine-decayed), "
                f"{res} loss samples per segment; values are means over pairs, cos_matrix the "
                "mean over pairs"
            ),
            criterion=(
                "holds if, over pairs of optima on different wedges (95% intervals), both (1) "
                f"tunnel barrier / straight barrier on the densely sampled path lies below "
                f"{cfg.barrier_fraction:g} (paper's recipe: split points optimised "
                "independently) and (2) the equal-lag contrast of the deviation cosines (within a "
                f"half minus across the midpoint; halves: the first {math.ceil(k / 2)} split "
                "points and the rest) lies above 0; fails if either part fails; barrier = max "
                "loss on the path − max endpoint loss. The jointly optimised path (same "
                "constraints) is reported beside it, not tested"
            ),
            notes=(
                "max_loss_split_points is the loss at the optimised split points alone; the "
                "dense path also samples the straight segments joining them, which is where a "
                "toy tunnel keeps loss: consecutive points can sit on different wedges, and the "
                "segment between two wedges leaves both. Across-block cosines also stay "
                "large in the toy: a first-half point must remove the coordinates of θ2's "
                "wedge, and staying normal to u forces it to shrink θ1's as well; second-half "
                "points do the mirror image, so both blocks lean towards −(θ1 + θ2)."
            ),
            figures=figure_names,
        )
    )

    if cfg.figures:
        from lossatlas.plots import figure_to_png
        from lossatlas.plots import toy as toy_plots

        result.figures["toy_tunnel_loss.png"] = figure_to_png(
            toy_plots.plot_tunnel_loss(
                as_numpy(position),
                as_numpy(straight_loss),
                as_numpy(path_loss),
                split_position=as_numpy(split_t),
                split_loss=as_numpy(split_loss),
                joint_loss=as_numpy(joint_loss),
            )
        )
        result.figures["toy_tunnel_cosine.png"] = figure_to_png(
            toy_plots.plot_cosine_matrix(
                as_numpy(cosine.mean(0)),
                title=f"Deviation cosines (mean over {pairs} pairs)",
            )
        )
        result.figures["toy_slice.png"] = figure_to_png(
            toy_plots.plot_wedge_slice(
                as_numpy(grid),
                as_numpy(grid),
                as_numpy(slice_loss),
                endpoints=as_numpy(ends[0] @ basis),
                path=as_numpy(path[0] @ basis),
            )
        )
    return result
