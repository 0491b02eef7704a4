"""The projection that keeps optimised points off the optima's affine span."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["projection_onto_complement"]


# |Q^T Q - I| above this means the caller's basis is not orthonormal.
_ORTHONORMAL_TOL = 1e-4


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
