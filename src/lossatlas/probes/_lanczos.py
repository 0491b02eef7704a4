"""Lanczos tridiagonalisation with full reorthogonalisation, and its Gauss quadrature.

Private helpers of :mod:`lossatlas.probes.curvature`. Several start vectors ("probes") run in
lock-step, so every Lanczos step is one ``matmat`` with ``P`` columns instead of ``P``
separate ``matvec`` calls: the operator vectorises those columns where that pays.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["gauss_quadrature", "lanczos"]

MatMat = Callable[[Tensor], Tensor]


def lanczos(
    matmat: MatMat, start: Tensor, steps: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Run ``steps`` Lanczos steps from each column of ``start`` in lock-step.

    Args:
        matmat: ``(D, P) -> (D, P)``, a symmetric operator applied to ``P`` columns.
        start: ``(D, P)`` start vectors (any scale; each column is normalised).
        steps: Lanczos steps ``m``; capped at ``D`` (after ``D`` steps the basis is complete).
        generator: draws a fresh direction if a run hits an invariant subspace (breakdown).

    Returns:
        ``(alpha, beta)``: float64 ``(P, m)`` diagonals and ``(P, m - 1)`` off-diagonals of the
        tridiagonal matrices ``T_p = Q_p^T A Q_p``.
    """
    dim, probes = start.shape
    steps = min(steps, dim)
    # Full reorthogonalisation keeps the whole basis: (P, m, D). In exact arithmetic the
    # three-term recurrence suffices, but in floating point the basis loses orthogonality as
    # soon as a Ritz value converges, and the quadrature then double-counts eigenvalues
    # ("ghosts"). Ghorbani et al. (2019) reorthogonalise fully for exactly this reason.
    basis = start.new_zeros(probes, steps, dim)
    alpha = torch.zeros(probes, steps, dtype=torch.float64)
    beta = torch.zeros(probes, max(steps - 1, 0), dtype=torch.float64)
    q = start / start.norm(dim=0, keepdim=True)
    scale = torch.zeros(probes, dtype=start.dtype, device=start.device)
    for j in range(steps):
        basis[:, j] = q.T
        w = matmat(q)  # (D, P)
        a = (q * w).sum(dim=0)
        alpha[:, j] = a.double().cpu()
        if j == steps - 1:
            break
        scale = torch.maximum(scale, a.abs())
        w = _orthogonalise(w, basis[:, : j + 1])  # removes alpha q_j and beta q_{j-1} too
        b = w.norm(dim=0)
        # Breakdown: the Krylov space is invariant. Continue with a fresh direction orthogonal
        # to the basis and a zero off-diagonal, so every run keeps the same length m.
        eps = torch.finfo(start.dtype).eps
        broken = b <= 100 * eps * scale.clamp_min(eps)
        if bool(broken.any()):
            fresh = torch.randn(dim, probes, generator=generator, device=generator.device)
            fresh = _orthogonalise(fresh.to(w), basis[:, : j + 1])
            w = torch.where(broken, fresh / fresh.norm(dim=0, keepdim=True), w)
            b = torch.where(broken, torch.zeros_like(b), b)
            q = torch.where(broken, w, w / b.clamp_min(eps))
        else:
            q = w / b
        beta[:, j] = b.double().cpu()
    return alpha, beta


def _orthogonalise(w: Tensor, basis: Tensor) -> Tensor:
    """Project the columns of ``w`` (D, P) off their probe's basis rows (P, j, D).

    Classical Gram-Schmidt applied twice ("twice is enough", Giraud et al. 2005): as stable as
    modified Gram-Schmidt but two batched matmuls per pass instead of a Python loop.
    """
    for _ in range(2):
        coeff = torch.bmm(basis, w.T.unsqueeze(-1))  # (P, j, 1)
        w = w - torch.bmm(basis.transpose(1, 2), coeff).squeeze(-1).T
    return w


def gauss_quadrature(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Nodes and weights of the Gauss quadrature defined by Lanczos' tridiagonal matrices.

    Args:
        alpha: ``(P, m)`` diagonals; beta: ``(P, m - 1)`` off-diagonals.

    Returns:
        ``(nodes, weights)``, each float64 ``(P, m)``: the Ritz values, and the squared first
        components of the matching unit eigenvectors of ``T_p`` (each row sums to 1).
    """
    tri = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    nodes, vectors = torch.linalg.eigh(tri)
    return nodes, vectors[:, 0, :] ** 2
