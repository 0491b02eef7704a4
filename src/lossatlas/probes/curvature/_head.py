"""The Hessian block of a model's final ``Linear`` layer under cross-entropy, in closed form.

When the logits are ``z = W a + b`` of a head ``Linear`` whose input ``a`` does not depend on
``W`` or ``b``, the loss is a function of ``(W, b)`` through ``z`` only, linearly, so the
second derivative of ``z`` in them vanishes and the block is exactly the Gauss-Newton one:

    H[(c, f), (d, g)] = mean_i A_i[c, d] * ã_i[f] * ã_i[g],   A_i = diag(p_i) - p_i p_i^T,

with ``p_i = softmax(z_i)`` and ``ã_i = (a_i, 1)`` (the 1 for the bias). :func:`dense_hessian`
uses it to skip the head's Hessian-vector products: the columns of every other parameter give
the head's cross terms by symmetry, and this block the rest. For ``cnn1d`` of width 16 the
head holds 810 of the 2,474 parameters, a third of the products.

Only the default loss (mean cross-entropy on class labels) on a head whose output *is* the
model's output, called once per forward, qualifies; :func:`find_head` says when.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lossatlas.params import ParamSpace

__all__ = ["Head", "find_head", "head_block"]


@dataclass(frozen=True)
class Head:
    """The final ``Linear`` of a model, and where its parameters sit in the flat vector.

    ``index`` ``(C * (F + 1),)`` (or ``(C * F,)`` without a bias) maps the block's rows, in
    the order ``(c, f)`` with ``f = F`` the bias, to positions in ``theta``.
    """

    module: nn.Linear
    index: Tensor


def find_head(
    model: nn.Module, space: ParamSpace, theta: Tensor, x: Tensor, buffers: Mapping[str, Tensor]
) -> Head | None:
    """The model's head, when its output is the model's output; else ``None``.

    One forward pass on ``x[:1]`` records every ``Linear`` call: the head is the one whose
    output tensor the model returns unchanged, called exactly once, with its weight (and bias)
    spanned by ``space``.
    """
    calls: dict[nn.Module, list[Tensor]] = {}

    def record(module: nn.Module, _inputs: Any, output: Any) -> None:
        calls.setdefault(module, []).append(output)

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    handles = [m.register_forward_hook(record) for m in linears]
    try:
        with torch.no_grad():
            out = space.forward(theta, x[:1], buffers)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, Tensor) or out.dim() != 2:
        return None  # the closed form is for (n, C) logits
    owners = [m for m, outputs in calls.items() if any(o is out for o in outputs)]
    if len(owners) != 1 or len(calls[owners[0]]) != 1:
        return None
    module = owners[0]
    assert isinstance(module, nn.Linear)
    names = {id(p): n for n, p in model.named_parameters()}
    slots = {slot.name: slot for slot in space.slots}
    weight = slots.get(names[id(module.weight)])
    bias = slots.get(names[id(module.bias)]) if module.bias is not None else None
    if weight is None or (module.bias is not None and bias is None):
        return None  # part of the head is held fixed: its block is not all in the space
    classes, features = module.out_features, module.in_features
    columns = torch.arange(weight.start, weight.stop).view(classes, features)
    if bias is not None:
        columns = torch.cat([columns, torch.arange(bias.start, bias.stop).view(classes, 1)], 1)
    return Head(module, columns.reshape(-1).to(theta.device))


def head_block(
    head: Head,
    space: ParamSpace,
    theta: Tensor,
    x: Tensor,
    buffers: Mapping[str, Tensor],
) -> Tensor:
    """The head's block ``sum_i A_i (x) ã_i ã_i^T`` over the samples ``x``: ``(m, m)`` with
    ``m = head.index.numel()``, rows in ``head.index``'s order. Divide by the number of samples
    for the mean loss's block."""
    inputs: list[Tensor] = []

    def record(_module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        inputs.append(args[0])

    handle = head.module.register_forward_hook(record)
    try:
        with torch.no_grad():
            logits = space.forward(theta, x, buffers)
    finally:
        handle.remove()
    features = inputs[0].reshape(logits.shape[0], -1)
    if head.module.bias is not None:
        features = torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)
    p = torch.softmax(logits, dim=-1)
    curvature = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)  # (n, C, C)
    n, classes = p.shape
    width = features.shape[1]
    # One (F, n) @ (n, F) product per class pair (c, d), as a single bmm: a plain three-way
    # einsum would materialise an (n, C, C, F, F) intermediate (1.3 GB for cnn1d's head).
    weighted = curvature.reshape(n, classes * classes).T.unsqueeze(2) * features  # (C², n, F)
    pairs = weighted.transpose(1, 2) @ features  # (C², F, F): sum_i A_i[c, d] ã_i ã_i^T
    block = pairs.view(classes, classes, width, width).permute(0, 2, 1, 3)  # (c, f, d, g)
    return block.reshape(classes * width, classes * width)
