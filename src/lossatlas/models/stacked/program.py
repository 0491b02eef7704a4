"""A stacked program: the loss and gradient of K members in one pass over a traced op chain."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from lossatlas.models.stacked.ops import Linear, Op
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
        # Under the default loss a final Linear head runs features-first, ``(K, C, B)``: with
        # 10 classes, on one CPU thread, the head's matmul took 37 us against 90 us
        # samples-first (8 members, batch 128) and the log-softmax over the class dimension
        # 7.6 us against 154 us, since it then vectorises across samples.
        last = self.ops[-1]
        self._head = last if self.loss_fn is None and isinstance(last, Linear) else None

    def __repr__(self) -> str:
        names = ", ".join(type(op).__name__ for op in self.ops)
        return f"StackedProgram(D={self.space.dim}, ops=[{names}])"

    def forward(self, params: Tensor, xb: Tensor) -> tuple[Tensor, list[object]]:
        """Logits ``(K, B, C)`` of every member on its own batch, and what backward needs."""
        return self._run(self.ops, params, xb)

    @staticmethod
    def _run(ops: list[Op], params: Tensor, x: Tensor) -> tuple[Tensor, list[object]]:
        """``ops`` forward from ``x``: the output and what each op's backward needs."""
        saved: list[object] = []
        for op in ops:
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
        head = self._head
        body = self.ops[:-1] if head is not None else self.ops
        with torch.no_grad():
            x, saved = self._run(body, params, xb.to(params.dtype))
            if head is not None:
                losses, logit_grad_t = _cross_entropy_grad_features_first(
                    head.forward_features_first(x.transpose(1, 2), params), yb
                )
                grad = head.backward_features_first(
                    logit_grad_t, x, params, grads, need_input=len(body) > self._first
                )
        if head is None:
            losses, grad = self._loss_grad(x, yb)
        with torch.no_grad():
            for i in range(len(body) - 1, self._first - 1, -1):
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
            losses, grad_t = _cross_entropy_grad_features_first(logits.transpose(1, 2), yb)
        return losses, grad_t.transpose(1, 2)


def _cross_entropy_grad_features_first(logits_t: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
    """Per-member mean cross-entropy ``(K,)`` of features-first logits ``(K, C, B)`` and its
    gradient with respect to them, ``(softmax - onehot(y)) / B``, also ``(K, C, B)``."""
    target = yb.unsqueeze(1)  # (K, 1, B)
    log_p = torch.log_softmax(logits_t, dim=1)
    picked = log_p.gather(1, target)  # (K, 1, B)
    losses = -picked.squeeze(1).mean(dim=1)
    grad = log_p.exp_()
    grad.scatter_add_(1, target, torch.full_like(picked, -1.0))
    grad.div_(logits_t.shape[2])
    return losses, grad
