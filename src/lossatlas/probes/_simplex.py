"""Geometry shared by tunnels and m-connectors: span bases, polylines, connector layouts.

Nothing here touches a model: these are pure tensor helpers for
:mod:`lossatlas.probes.paths`.

Connector layout. The vertex table of a connector over ``m + 1`` optima is
``[optimum 0, ..., optimum m, point 0, point 1, ...]`` where the points are the barycentres of a
set of faces of the optima simplex, each named by the tuple of optimum indices it spans. The
``shape`` of the connector says which points and which simplices:

* ``"cone"``: one point, the centroid ``(0, ..., m)``. The connector is the union of the
  ``m + 1`` simplices ``conv(c, facet_i)``, where facet ``i`` holds every optimum but ``i``.
  For ``m >= 2`` it contains the optima simplex's own facets (straight edges between optima).
* ``"star"``: one point, the centroid; the connector is the union of the ``m + 1`` segments
  ``[c, theta_i]`` (simplices of 2 vertices).
* ``"subdivision"``: the barycentres of *every* face with at least two optima, the centroid
  first, then faces by decreasing size, lexicographic within a size. The connector is the
  barycentric subdivision: the union over all ``(m + 1)!`` orderings ``pi`` of
  ``conv(c, ..., b{pi0, pi1, pi2}, b{pi0, pi1}, theta_pi0)``. Each of its simplices holds one
  optimum only, so no straight segment between two optima is part of it.

A simplex is a row of vertex indices (``m + 1`` of them, 2 for the star); its first entry is
always the centroid.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "Shape",
    "face_count",
    "face_sets",
    "log_volume",
    "orthonormal_span",
    "polyline",
    "sample_simplices",
    "scatter_weights",
]

# Refuse a span whose smallest singular direction is this much weaker than the largest: the
# optima are then (numerically) affinely dependent and the projection would be ill-defined.
_RANK_RTOL = 1e-6


def orthonormal_span(optima: Tensor) -> Tensor:
    """Orthonormal basis ``(D, m)`` of ``span{theta_i - theta_0}`` for optima ``(m + 1, D)``.

    Computed by a reduced QR in float64 (then cast back), so the basis is orthonormal to
    float64 precision even for float32 optima.

    Raises:
        ValueError: the optima are affinely dependent (e.g. two are equal).
    """
    diffs = (optima[1:] - optima[:1]).to(torch.float64).T  # (D, m)
    q, r = torch.linalg.qr(diffs, mode="reduced")
    diag = r.diagonal().abs()
    if diag.numel() == 0 or bool(diag.min() <= _RANK_RTOL * diag.max()):
        raise ValueError(
            f"the {optima.shape[0]} optima are affinely dependent (their differences have "
            "rank < m); drop duplicate or collinear optima"
        )
    return q.to(optima.dtype)


def polyline(nodes: Tensor, node_t: Tensor, t: Tensor) -> Tensor:
    """Points ``(P, D)`` at positions ``t`` (P,) on the piecewise-linear path through ``nodes``.

    ``nodes`` is ``(n, D)`` at increasing positions ``node_t`` (n,) from 0 to 1. A position equal
    to ``node_t[j]`` gives ``nodes[j]`` exactly: it is written as ``(1 - s) a + s b`` with
    ``s = 0`` (or ``s = 1`` at the last node), which reproduces the node bit for bit.
    """
    node_t = node_t.to(torch.float64)
    tt = t.to(torch.float64).clamp(0.0, 1.0)
    seg = (torch.searchsorted(node_t, tt, right=True) - 1).clamp(0, nodes.shape[0] - 2)
    lo, hi = node_t[seg], node_t[seg + 1]
    s = ((tt - lo) / (hi - lo)).to(nodes.dtype).unsqueeze(1)
    return (1 - s) * nodes[seg] + s * nodes[seg + 1]


Shape = Literal["cone", "star", "subdivision"]


def face_sets(m: int, shape: Shape) -> list[tuple[int, ...]]:
    """The faces whose barycentres are a connector's optimised points (centroid first)."""
    full = tuple(range(m + 1))
    if shape != "subdivision":
        return [full]
    sets = [full]
    for size in range(m, 1, -1):
        sets.extend(itertools.combinations(full, size))
    return sets


def face_count(m: int, shape: Shape) -> int:
    """``len(face_sets(m, shape))`` without building the list (``2^(m+1) - m - 2`` for the
    subdivision)."""
    return 2 ** (m + 1) - m - 2 if shape == "subdivision" else 1


def sample_simplices(m: int, shape: Shape, n: int, generator: torch.Generator) -> Tensor:
    """``n`` simplices of the connector drawn uniformly: ``(n, m + 1)`` (star: ``(n, 2)``).

    Cone: a facet ``i`` uniformly, giving ``(c, optima except i)``. Star: an optimum ``i``
    uniformly, giving ``(c, i)``. Subdivision: a uniformly random ordering ``pi`` of the
    optima, giving ``(c, b{pi0..pi(m-1)}, ..., b{pi0, pi1}, pi0)``. For the cone and the
    subdivision all simplices of the unoptimised connector (points at the barycentres) have
    the same volume, so a uniform simplex plus Dirichlet(1) weights is uniform on the optima's
    convex hull.
    """
    m1 = m + 1
    centroid = m1  # the first point after the optima
    if shape in ("cone", "star"):
        pick = torch.randint(m1, (n, 1), generator=generator, device=generator.device).cpu()
        if shape == "star":
            return torch.cat([torch.full((n, 1), centroid), pick], dim=1)
        others = torch.arange(m1).expand(n, m1)
        keep = others[others != pick].reshape(n, m)
        return torch.cat([torch.full((n, 1), centroid), keep], dim=1)
    if shape != "subdivision":
        raise ValueError(f"unknown connector shape {shape!r} (cone, star or subdivision)")
    index = {s: m1 + i for i, s in enumerate(face_sets(m, shape))}
    keys = torch.rand(n, m1, generator=generator, device=generator.device).cpu()
    rows = []
    for order in keys.argsort(dim=1).tolist():
        # Nested prefixes of the ordering, largest first: the flag of faces of this simplex.
        flag = [index[tuple(sorted(order[:size]))] for size in range(m1, 1, -1)]
        rows.append([*flag, order[0]])
    return torch.tensor(rows, dtype=torch.long)


def scatter_weights(simplices: Tensor, weights: Tensor, vertices: int) -> Tensor:
    """Dense weights ``(n, V)`` over the vertex table from per-simplex weights ``(n, m + 1)``."""
    out = torch.zeros(simplices.shape[0], vertices, dtype=weights.dtype)
    return out.scatter_(1, simplices, weights)


def log_volume(gram: Tensor, simplices: Tensor) -> Tensor:
    """Log volume ``(n,)`` of the simplices ``(n, s)`` of a vertex table (dimension ``s - 1``).

    ``gram`` is the ``(V, V)`` Gram matrix of the vertex table. With edge vectors
    ``E_j = v_{s_j} - v_{s_0}`` the volume is ``sqrt(det(E E^T)) / m!`` (the Gram form of the
    Cayley-Menger determinant), and ``E_i . E_j`` is read off ``gram``, so no ``(n, m, D)`` edge
    tensor is ever formed. Pass a float64 ``gram``: the differences cancel digits.
    """
    first, rest = simplices[:, :1], simplices[:, 1:]  # (n, 1), (n, m)
    g_rr = gram[rest.unsqueeze(2), rest.unsqueeze(1)]  # (n, m, m)
    g_r0 = gram[rest, first.expand_as(rest)]  # (n, m)
    g_00 = gram[first, first]  # (n, 1)
    edges = g_rr - g_r0.unsqueeze(2) - g_r0.unsqueeze(1) + g_00.unsqueeze(2)
    dim = rest.shape[1]
    return 0.5 * torch.logdet(edges) - math.lgamma(dim + 1)
