"""The Hessian trace by Hutch++ (Meyer et al. 2021)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lossatlas.data.batches import BatchAdapter
from lossatlas.evaluate import LossFn
from lossatlas.params import Wrt
from lossatlas.probes._hutch import Distribution, hutchpp
from lossatlas.probes.curvature.operator import HessianOperator

__all__ = ["hessian_trace"]


def hessian_trace(
    model: nn.Module,
    data: Any,
    *,
    generator: torch.Generator,
    params: Tensor | None = None,
    wrt: Wrt = None,
    num_matvecs: int = 60,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int = 4096,
    distribution: Distribution = "rademacher",
) -> float:
    """``tr(H)`` by Hutch++ (Meyer et al. 2021) with ``num_matvecs`` Hessian-vector products.

    Unbiased; its error falls like ``1/num_matvecs`` when the spectrum decays (Hutchinson's
    like ``1/sqrt(num_matvecs)``). When ``num_matvecs >= D`` the trace is computed exactly
    from ``H e_i`` for all ``D`` basis vectors, which costs no more.

    Args:
        generator: the only source of randomness (same seed, same estimate).
        num_matvecs: products to spend, at least 3.
        distribution: ``"rademacher"`` (lower variance) or ``"normal"`` probe entries.
        wrt, adapter: which parameters, how batches are read (see :class:`HessianOperator`).
    """
    if num_matvecs < 3:
        raise ValueError(f"num_matvecs must be at least 3, got {num_matvecs}")
    op = HessianOperator(
        model,
        data,
        params=params,
        wrt=wrt,
        loss_fn=loss_fn,
        adapter=adapter,
        buffers=buffers,
        batch_size=batch_size,
    )
    if num_matvecs >= op.dim:
        return float(_exact_trace(op))
    estimate = hutchpp(
        op.matmat,
        op.dim,
        num_matvecs,
        generator,
        dtype=op.dtype,
        device=op.device,
        distribution=distribution,
    )
    return float(estimate)


def _exact_trace(op: HessianOperator) -> Tensor:
    total = torch.zeros((), dtype=op.dtype, device=op.device)
    step = max(op._columns_per_call, 1)
    for s in range(0, op.dim, step):
        cols = torch.arange(s, min(s + step, op.dim), device=op.device)
        basis = torch.zeros(op.dim, cols.numel(), dtype=op.dtype, device=op.device)
        basis[cols, torch.arange(cols.numel(), device=op.device)] = 1
        total += op.matmat(basis)[cols, torch.arange(cols.numel(), device=op.device)].sum()
    return total
