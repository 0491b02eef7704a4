"""The exact dense Hessian, the reference for small models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lossatlas.data.adapter import train_tensors
from lossatlas.evaluate import LossFn
from lossatlas.params import ParamSpace
from lossatlas.probes.curvature.operator import (
    DENSE_MAX_DIM,
    DENSE_SAMPLE_COLUMNS,
    HessianOperator,
    eval_mode,
)

__all__ = ["dense_hessian"]


def dense_hessian(
    model: nn.Module,
    data: Any,
    *,
    params: Tensor | None = None,
    loss_fn: LossFn | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """The exact ``(D, D)`` Hessian of the mean loss, via ``torch.func.hessian``.

    Independent of :class:`HessianOperator`'s code path, so it is the reference its tests
    compare against. Samples are processed in chunks (default: as many as keep
    ``D x chunk <= DENSE_SAMPLE_COLUMNS``, since ``torch.func.hessian`` vmaps over all ``D``
    basis vectors at once), weighted by their share of the samples.

    Raises:
        ValueError: if ``D > DENSE_MAX_DIM`` (use the operator-based functions instead).
    """
    space = ParamSpace(model)
    if space.dim > DENSE_MAX_DIM:
        raise ValueError(
            f"dense_hessian refuses D={space.dim} > {DENSE_MAX_DIM} (a D x D matrix); use "
            "hessian_eigenvalues, spectral_density or count_above(method='slq') instead"
        )
    # Only for its resolved point, data and buffers: no product is taken through it.
    op = HessianOperator(
        model,
        data,
        params=params,
        loss_fn=loss_fn,
        buffers=buffers,
        check_deterministic=False,
        linearize=False,
    )
    x, y = train_tensors(data)
    x = x.to(op.device, dtype=op.dtype if x.is_floating_point() else None)
    y = y.to(op.device)
    chunk = batch_size or max(1, DENSE_SAMPLE_COLUMNS // space.dim)
    loss = loss_fn or F.cross_entropy
    total = torch.zeros(op.shape, dtype=op.dtype, device=op.device)
    with eval_mode(model, True), torch.no_grad():
        for s in range(0, op.num_samples, chunk):
            xs, ys = x[s : s + chunk], y[s : s + chunk]
            weight = xs.shape[0] / op.num_samples

            def chunk_loss(theta: Tensor, xs: Tensor = xs, ys: Tensor = ys) -> Tensor:
                return loss(space.forward(theta, xs, op.buffers), ys)

            total += torch.func.hessian(chunk_loss)(op.params) * weight
    return total
