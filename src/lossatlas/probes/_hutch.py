"""Hutch++ trace estimation (Meyer, Musco, Musco & Woodruff 2021) with an explicit generator.

Private helper of :mod:`lossatlas.probes.curvature`. curvlinops ships ``hutchpp_trace``, but it
draws its random vectors from torch's *global* RNG; lossatlas never touches global RNG state
(see :mod:`lossatlas.seeding`), so the estimator is written here against a plain ``matmat``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Distribution", "hutchpp", "random_matrix"]

Distribution = Literal["rademacher", "normal"]


def random_matrix(
    dim: int,
    cols: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype,
    device: torch.device,
    distribution: Distribution = "rademacher",
) -> Tensor:
    """``(dim, cols)`` i.i.d. Rademacher (+-1) or standard normal entries, so E[v v^T] = I.

    Drawn on the generator's device (generators are device-bound), then moved.
    """
    if distribution == "rademacher":
        bits = torch.randint(0, 2, (dim, cols), generator=generator, device=generator.device)
        out = bits.to(dtype) * 2 - 1
    elif distribution == "normal":
        out = torch.randn(dim, cols, generator=generator, device=generator.device, dtype=dtype)
    else:
        raise ValueError(f"unknown distribution '{distribution}' (use 'rademacher' or 'normal')")
    return out.to(device)


def hutchpp(
    matmat: Callable[[Tensor], Tensor],
    dim: int,
    num_matvecs: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype,
    device: torch.device,
    distribution: Distribution = "rademacher",
) -> Tensor:
    """Hutch++ estimate of ``tr(A)`` with ``num_matvecs`` products (``3 <= num_matvecs < dim``).

    A third of the products sketch ``A S``; its orthonormal basis ``Q`` captures the top of the
    spectrum, whose trace ``tr(Q^T A Q)`` is computed exactly with another third. Plain
    Hutchinson on the deflated operator ``(I - QQ^T) A (I - QQ^T)`` estimates the rest with the
    last third. The variance falls as ``1/num_matvecs^2`` instead of Hutchinson's
    ``1/num_matvecs`` when the spectrum decays, as Hessian spectra do.

    Returns:
        A 0-dim tensor in ``dtype``.
    """
    if not 3 <= num_matvecs < dim:
        raise ValueError(f"Hutch++ needs 3 <= num_matvecs < D={dim}, got {num_matvecs}")
    sketch = num_matvecs // 3
    rest = num_matvecs - 2 * sketch  # spend every product the caller paid for

    def draw(columns: int) -> Tensor:
        return random_matrix(
            dim, columns, generator, dtype=dtype, device=device, distribution=distribution
        )

    q, _ = torch.linalg.qr(matmat(draw(sketch)))
    top = (q * matmat(q)).sum()
    g = draw(rest)
    g = g - q @ (q.T @ g)
    # g is already orthogonal to Q, so g^T (I - QQ^T) A (I - QQ^T) g = g^T A g.
    return top + (g * matmat(g)).sum() / rest
