"""A stacked program: the loss and gradient of K members in one pass over a traced op chain."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from lossatlas.models.stacked.ops import Op
from lossatlas.models.stacked.trace import trace_ops
from lossatlas.params import ParamSpace

__all__ = ["StackedProgram"]

LossFn = Callable[[Tensor, Tensor], Tensor]


class StackedProgram:
    """K members of one traced model, evaluated and differentiated together.

    ``step(params (K, D), xb (K, B, *input), yb (K, B)) -> (losses (K,), grads (K, D))``: the
    forward pass runs the op chain on stacked parameters (``bmm`` for Linear, im2col +
    ``bmm`` for Conv1d) and the backward pass is written out per op, writing every
    gradient into one ``(K, D)`` buffer that is reused across steps (read it before the next
    call). The default loss is the mean cross-entropy with its gradient in closed form; any
    other ``loss_fn(logits (B, C), y (B,)) -> scalar`` is differentiated by autograd on the
    logits alone.

    Raises :class:`~lossatlas.models.stacked.NotTraceable` on construction when the model is
    not a supported chain (see :mod:`~lossatlas.models.stacked.trace`).
    """

    def __init__(self, space: ParamSpace, loss_fn: LossFn | None = None) -> None:
        self.space = space
        self.ops: list[Op] = trace_ops(space)
        self.loss_fn = None if loss_fn is F.cross_entropy else loss_fn
        # Ops before the first one with parameters only reshape the data: no gradient there.
        self._first = next(i for i, op in enumerate(self.ops) if op.has_params)
        self._grads: Tensor | None = None

    def __repr__(self) -> str:
        names = ", ".join(type(op).__name__ for op in self.ops)
        return f"StackedProgram(D={self.space.dim}, ops=[{names}])"

    def forward(self, params: Tensor, xb: Tensor) -> tuple[Tensor, list[object]]:
        """Logits ``(K, B, C)`` of every member on its own batch, and what backward needs."""
        saved: list[object] = []
        x = xb
        for op in self.ops:
            x, keep = op.forward(x, params)
            saved.append(keep)
        return x, saved

    def step(self, params: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member mean losses ``(K,)`` and their gradients ``(K, D)`` (a reused buffer)."""
        if (
            self._grads is None
            or self._grads.shape != params.shape
            or (self._grads.dtype != params.dtype or self._grads.device != params.device)
        ):
            self._grads = torch.empty_like(params)
        grads = self._grads
        with torch.no_grad():
            logits, saved = self.forward(params, xb.to(params.dtype))
        losses, logit_grad = self._loss_grad(logits, yb)
        grad: Tensor | None = logit_grad
        with torch.no_grad():
            for i in range(len(self.ops) - 1, self._first - 1, -1):
                assert grad is not None  # only the first op with parameters returns None
                grad = self.ops[i].backward(
                    grad, saved[i], params, grads, need_input=i > self._first
                )
        return losses, grads

    def _loss_grad(self, logits: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        if self.loss_fn is not None:
            leaf = logits.detach().requires_grad_()
            with torch.enable_grad():
                losses = vmap(self.loss_fn)(leaf, yb)
                (grad,) = torch.autograd.grad(losses.sum(), leaf)
            return losses.detach(), grad
        with torch.no_grad():
            log_p = torch.log_softmax(logits, dim=-1)
            picked = log_p.gather(-1, yb.unsqueeze(-1)).squeeze(-1)  # (K, B)
            losses = -picked.mean(dim=1)
            # d mean(-log softmax[y]) / d logits = (softmax - onehot(y)) / B
            grad = log_p.exp_()
            grad.scatter_add_(-1, yb.unsqueeze(-1), torch.full_like(picked, -1.0).unsqueeze(-1))
            grad.div_(logits.shape[1])
        return losses, grad
