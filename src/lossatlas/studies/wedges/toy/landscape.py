"""The toy n-wedge landscape of the "large scale structure" paper (PAPERS.md A1, paper §3).

Space ``R^D`` holds one *wedge* per n-subset ``S`` of the axes: long (unbounded) along the ``n``
axes in ``S`` and thin along the other ``D - n``. The loss of a point is its distance to the
nearest wedge, so the low-loss set is the union of all ``C(D, n)`` wedges, and no wedge is ever
stored: the nearest one is always the one whose long axes are the ``n`` largest coordinates.

Definition used here (every generalisation reduces to the paper's formula for the defaults):

1. **Frame.** ``z = diag(1 / w) Qᵀ P``. ``Q`` is a seeded random orthogonal matrix when
   ``rotation=True`` (so wedges are not axis-aligned) and the identity otherwise. ``w`` holds
   one width per frame axis: all ones for ``widths="equal"``; for ``widths="random"``, drawn
   once, log-uniform in ``[1 / width_spread, width_spread]``.
2. **Excess.** ``s_i = max(|z_i| - ε, 0)``: how far coordinate ``i`` sticks out of the
   thickness ``ε`` (``ε = 0`` gives infinitely thin wedges).
3. **Loss.** ``L(P) = sqrt(sum of the D - n smallest s_i²)``.

Why this is "distance to the nearest wedge": in frame coordinates wedge ``S`` is the slab
``W_S = {z : |z_i| <= ε for every i ∉ S}``; its nearest point to ``z`` clamps the thin
coordinates into ``[-ε, ε]``, so ``dist(z, W_S)² = sum_{i∉S} s_i²``, and the minimum over ``S``
drops the ``n`` largest ``s_i``. With ``widths="equal"`` the frame is an isometry of ``P``-space,
so ``L`` is exactly the Euclidean distance from ``P`` to the nearest (rotated, ``ε``-thick)
wedge; with ``ε = 0`` and no rotation it is the paper's ``sqrt(sum of the D - n smallest P_i²)``.

Random widths stretch frame axis ``i`` by ``w_i``: wedge ``S`` then has thickness ``ε w_i`` along
each of its thin axes ``i ∉ S`` *and* the loss rises at rate ``1 / w_i`` across it. A wide axis
is both thicker and shallower, which is what "wider" means for tunnel width (PAPERS.md A6).
Every wedge gets its own cross-section ``(w_i)_{i∉S}``, so wedges differ in width, while the
``C(D, n)`` wedges still need only ``D`` numbers. The loss is then the distance to the nearest
wedge in the stretched metric ``|diag(1 / w) Qᵀ ΔP|``.

The loss is positively homogeneous for ``ε = 0`` (``L(cP) = c L(P)`` for ``c > 0``), so only the
ratio of ``ε`` to the scale of the points matters.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from lossatlas.seeding import make_generator

__all__ = ["WedgeLandscape"]


def _safe_sqrt(q: Tensor) -> Tensor:
    """``sqrt(q)`` for ``q >= 0`` whose gradient is 0 (not NaN) where ``q == 0``.

    The loss is exactly 0 on a wedge, where ``sqrt`` has an infinite derivative and autograd
    would give ``inf * 0 = NaN``. The inner ``where`` keeps the sqrt's argument away from 0 so
    its backward is finite; the outer ``where`` routes a zero gradient to those entries (0 is a
    valid subgradient there: the point is a global minimum).
    """
    positive = q > 0
    return torch.where(positive, torch.where(positive, q, torch.ones_like(q)).sqrt(), 0.0)


class WedgeLandscape:
    """Loss = distance to the nearest of the ``C(dim, n_long)`` wedges (see the module docstring).

    Args:
        dim: the dimension ``D`` of the space.
        n_long: ``n``, the number of long axes of every wedge (``0 <= n < D``).
        epsilon: thickness ``ε >= 0`` of every wedge along its thin axes (in frame units).
        rotation: rotate the wedges by a seeded random orthogonal ``Q``.
        widths: ``"equal"`` (all ``w_i = 1``) or ``"random"`` (per-axis ``w_i`` drawn once).
        seed: seeds ``Q`` and ``w`` through :func:`~lossatlas.seeding.make_generator`.
        width_spread: random widths are log-uniform in ``[1 / width_spread, width_spread]``.
        dtype: floating dtype of ``Q`` and ``w`` (float64 by default: the toy is tiny, and
            optimisation can then drive the loss many decades down before rounding matters).

    Attributes:
        rotation_matrix: ``Q`` (D, D), or ``None`` when ``rotation=False``.
        widths: ``w`` (D,).
    """

    def __init__(
        self,
        dim: int,
        n_long: int,
        epsilon: float = 0.0,
        rotation: bool = False,
        widths: Literal["equal", "random"] = "equal",
        seed: int = 0,
        *,
        width_spread: float = 2.0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not 0 <= n_long < dim:
            raise ValueError(f"n_long must be in [0, dim) = [0, {dim}), got {n_long}")
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        if widths not in ("equal", "random"):
            raise ValueError(f"widths must be 'equal' or 'random', got {widths!r}")
        if width_spread < 1:
            raise ValueError(f"width_spread must be >= 1, got {width_spread}")
        self.dim = dim
        self.n_long = n_long
        self.epsilon = float(epsilon)
        self.rotation = rotation
        self.width_kind = widths
        self.seed = seed
        self.dtype = dtype

        self.rotation_matrix: Tensor | None = None
        if rotation:
            gen = make_generator(seed, "wedges", "rotation", dim)
            gauss = torch.randn(dim, dim, generator=gen, dtype=dtype)
            q, r = torch.linalg.qr(gauss)
            # Fixing the signs by diag(R) makes Q Haar-distributed (plain QR is not).
            signs = torch.sign(torch.diagonal(r))
            signs[signs == 0] = 1
            self.rotation_matrix = q * signs
        if widths == "random":
            gen = make_generator(seed, "wedges", "widths", dim)
            log_w = (torch.rand(dim, generator=gen, dtype=dtype) * 2 - 1) * math.log(width_spread)
            self.widths = log_w.exp()
        else:
            self.widths = torch.ones(dim, dtype=dtype)

    def __repr__(self) -> str:
        return (
            f"WedgeLandscape(dim={self.dim}, n_long={self.n_long}, epsilon={self.epsilon}, "
            f"rotation={self.rotation}, widths={self.width_kind!r}, seed={self.seed})"
        )

    @property
    def n_thin(self) -> int:
        """``D - n``: the number of thin axes of every wedge."""
        return self.dim - self.n_long

    @property
    def wedge_count(self) -> int:
        """``C(D, n)``: how many wedges the landscape holds."""
        return math.comb(self.dim, self.n_long)

    def describe(self) -> str:
        """One line for ``Claim.setup`` strings."""
        return (
            f"D={self.dim}, n={self.n_long}, eps={self.epsilon:g}, "
            f"rotation={self.rotation}, widths={self.width_kind}"
        )

    def _check(self, points: Tensor) -> None:
        if points.shape[-1] != self.dim:
            raise ValueError(f"points must have last dimension {self.dim}, got {points.shape}")

    def to_frame(self, points: Tensor) -> Tensor:
        """Frame coordinates ``z = diag(1 / w) Qᵀ P``: (..., D) -> (..., D), differentiable."""
        self._check(points)
        z = points
        if self.rotation_matrix is not None:
            # Row vectors: (Qᵀ P)ᵀ = Pᵀ Q.
            z = z @ self.rotation_matrix.to(points.dtype)
        if self.width_kind == "random":
            z = z / self.widths.to(points.dtype)
        return z

    def from_frame(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`to_frame`: ``P = Q diag(w) z``, (..., D) -> (..., D)."""
        self._check(z)
        points = z
        if self.width_kind == "random":
            points = points * self.widths.to(z.dtype)
        if self.rotation_matrix is not None:
            points = points @ self.rotation_matrix.to(z.dtype).T
        return points

    def excess(self, points: Tensor) -> Tensor:
        """``s = max(|z| - ε, 0)`` per frame axis: (..., D) -> (..., D)."""
        z = self.to_frame(points)
        if self.epsilon > 0:
            return (z.abs() - self.epsilon).clamp_min(0.0)
        return z.abs()

    def loss(self, points: Tensor) -> Tensor:
        """Distance to the nearest wedge: (..., D) -> (...). Batched and differentiable.

        Sums the ``D - n`` smallest squared excesses directly (``topk(largest=False)``) rather
        than "total minus the n largest": near a wedge the long coordinates are large and the
        subtraction would cancel catastrophically.
        """
        squares = self.excess(points).square()
        smallest = torch.topk(squares, self.n_thin, dim=-1, largest=False).values
        return _safe_sqrt(smallest.sum(-1))

    __call__ = loss

    def nearest_wedge(self, points: Tensor) -> Tensor:
        """Long axes (frame axis indices, ascending) of the nearest wedge: (..., D) -> (..., n).

        They are the ``n`` largest ``|z_i|`` (the excess is monotone in ``|z_i|``, and ranking by
        ``|z_i|`` rather than the excess breaks ties between axes inside the thickness in a
        well-defined way). Ties in ``|z_i|`` themselves are broken by ``torch.topk``.
        """
        with torch.no_grad():
            z = self.to_frame(points).abs()
            idx = torch.topk(z, self.n_long, dim=-1, largest=True).indices
            return torch.sort(idx, dim=-1).values

    def sample_init(self, count: int, generator: torch.Generator, scale: float = 1.0) -> Tensor:
        """``count`` random starting points ``scale * N(0, I_D)``: (count, D), in ``self.dtype``.

        A standard Gaussian point has norm ``≈ scale * sqrt(D)`` and its distance to the nearest
        wedge is a sizeable fraction of that, so for ``ε << scale`` inits start far from every
        wedge and from the origin.
        """
        return torch.randn(count, self.dim, generator=generator, dtype=self.dtype) * scale
