"""What the subspace probes share: resolving data and device, the evaluator, result helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lossatlas.data.batches import BatchAdapter, Batches, as_batches, resolve_adapter
from lossatlas.evaluate import Autocast, LossFn, Strategy
from lossatlas.params import ParamSpace, Wrt
from lossatlas.probes._grid import SubspaceEvaluator

__all__ = ["Setup", "as_rows", "make_evaluator", "resolve_setup", "to_numpy"]


def to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@dataclass
class Setup:
    """The parameter space, the data source (read batch by batch) and the compute device/dtype."""

    space: ParamSpace
    source: Batches
    dtype: torch.dtype
    device: torch.device


def resolve_setup(
    model: nn.Module,
    data: Any,
    split: str,
    like: Tensor | None,
    *,
    wrt: Wrt = None,
    adapter: BatchAdapter | None = None,
    loss_fn: LossFn | None = None,
) -> Setup:
    """Resolve ``data``'s split and the compute device/dtype (``like``'s, else the model's)."""
    source = as_batches(data, resolve_adapter(adapter, loss_fn), split=split)
    space = ParamSpace(model, wrt)
    if like is None:
        first = next(model.parameters())
        data_device = source.first().device
        device = data_device if data_device.type != "cpu" else first.device
        dtype = first.dtype
    else:
        device, dtype = like.device, like.dtype
    return Setup(space, source, dtype, device)


def make_evaluator(
    model: nn.Module,
    setup: Setup,
    *,
    loss_fn: LossFn | None,
    bn_data: Any,
    memory_budget_mb: float,
    strategy: Strategy,
    shortcut: bool,
    autocast: Autocast = None,
) -> SubspaceEvaluator:
    return SubspaceEvaluator(
        model,
        setup.source,
        space=setup.space,
        device=setup.device,
        dtype=setup.dtype,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
        autocast=autocast,
    )


def as_rows(t: Tensor, dim: int, what: str) -> Tensor:
    rows = t.detach().reshape(1, -1) if t.dim() == 1 else t.detach()
    if rows.dim() != 2 or rows.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {tuple(t.shape)}")
    return rows
