"""A1 (b): tunnels between optima on different wedges, split points projected normal to the
segment (PAPERS.md A3 on the toy). Claim ``toy.tunnel``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lossatlas.claims import Claim
from lossatlas.seeding import make_generator
from lossatlas.studies.wedges.config import ToyConfig
from lossatlas.studies.wedges.toy._common import (
    DTYPE,
    PAPER_SETUP,
    ToyResult,
    adam_descent,
    as_numpy,
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

    # Dense sampling: path_resolution samples per segment, then the final endpoint.
    res = cfg.path_resolution
    path = torch.cat([theta1[:, None], points, theta2[:, None]], dim=1)  # (T, k + 2, D)
    frac = torch.arange(res, dtype=DTYPE) / res
    segments = (
        path[:, :-1, None, :]
        + frac[None, None, :, None] * (path[:, 1:] - path[:, :-1])[:, :, None, :]
    )
    dense = torch.cat([segments.reshape(pairs, -1, dim), theta2[:, None]], dim=1)  # (T, S, D)
    position = torch.linspace(0.0, 1.0, dense.shape[1], dtype=DTYPE)
    straight = theta1[:, None, :] + position[None, :, None] * delta[:, None, :]
    with torch.no_grad():
        end_loss = landscape.loss(ends).amax(-1)  # (T,)
        straight_loss = landscape.loss(straight)
        path_loss = landscape.loss(dense)
        split_loss = landscape.loss(points)
    straight_barrier = straight_loss.amax(-1) - end_loss
    path_barrier = path_loss.amax(-1) - end_loss
    ratio = path_barrier / straight_barrier

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
            "tunnel_split_position": as_numpy(split_t),
            "tunnel_split_loss": as_numpy(split_loss),
            "tunnel_deviation": as_numpy(deviation),
            "tunnel_deviation_dot_u": as_numpy(dev_dot_u),
            "tunnel_cosine": as_numpy(cosine),
            "tunnel_endpoints": as_numpy(ends),
            "tunnel_endpoint_wedges": as_numpy(wedges),
            "tunnel_straight_barrier": as_numpy(straight_barrier),
            "tunnel_path_barrier": as_numpy(path_barrier),
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
    holds = (
        bool(different.all()) and mean_ratio < cfg.barrier_fraction and within_mean > across_mean
    )
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
                "max_loss_split_points": float(split_loss.max()),
                "within_block_cos": within_mean,
                "across_block_cos": across_mean,
                "max_abs_deviation_dot_u": float(dev_dot_u.abs().max()),
                "endpoints_on_different_wedges": bool(different.all()),
                "cos_matrix": as_numpy(cosine.mean(0)),
            },
            holds=holds,
            setup=(
                f"toy wedges ({landscape.describe()}); {pairs} pairs of optima (Adam "
                f"{cfg.steps} steps from N(0, {scale:g}^2 I) starts), k = {k} split points, "
                f"projected GD {cfg.tunnel_steps} steps (lr {cfg.tunnel_lr:g} cosine-decayed), "
                f"{res} loss samples per segment; values are means over pairs, cos_matrix the "
                "mean over pairs"
            ),
            criterion=(
                "endpoints on different wedges, mean over pairs of (tunnel barrier / straight "
                f"barrier) < {cfg.barrier_fraction:g} on the densely sampled path, and mean "
                "within-block cosine > mean across-block cosine (blocks t < 1/2 and t > 1/2); "
                "barrier = max loss on the path − max endpoint loss"
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
