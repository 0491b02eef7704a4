"""SGD and Adam/AdamW as pure tensor updates on a population ``params`` of shape (K, D).

Every hyperparameter is a ``(K, 1)`` column, so each member can have its own LR, weight decay
and momentum while the whole population is updated by a few fused ops. The update rules follow
``torch.optim.SGD`` / ``Adam`` / ``AdamW`` exactly (tested against them), so a member trained
here matches the same member trained with the stock optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["SGD", "Adam", "FunctionalOptimizer", "HyperParams", "make_optimizer"]


def _column(
    value: float | Sequence[float] | torch.Tensor, members: int, like: torch.Tensor, name: str
) -> torch.Tensor:
    """Broadcast a scalar or per-member sequence to a (K, 1) column on ``like``'s device."""
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(members)
    if tensor.numel() != members:
        raise ValueError(f"{name} has {tensor.numel()} values for {members} members")
    return tensor.reshape(members, 1).clone()


@dataclass
class HyperParams:
    """Per-member hyperparameters, each a (K, 1) column."""

    lr: torch.Tensor
    weight_decay: torch.Tensor
    momentum: torch.Tensor

    @classmethod
    def build(
        cls,
        params: torch.Tensor,
        *,
        lr: float | Sequence[float],
        weight_decay: float | Sequence[float] = 0.0,
        momentum: float | Sequence[float] = 0.9,
    ) -> HyperParams:
        members = params.shape[0]
        return cls(
            lr=_column(lr, members, params, "lr"),
            weight_decay=_column(weight_decay, members, params, "weight_decay"),
            momentum=_column(momentum, members, params, "momentum"),
        )

    def select(self, index: slice | torch.Tensor) -> HyperParams:
        """The hyperparameters of a subset of members."""
        return HyperParams(self.lr[index], self.weight_decay[index], self.momentum[index])


class FunctionalOptimizer(Protocol):
    """An optimiser whose state is a dict of (K, D) or (K, 1) tensors."""

    def init_state(self, params: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        state: dict[str, torch.Tensor],
        hp: HyperParams,
        lr_factor: float,
        active: torch.Tensor,
    ) -> None:
        """Update ``params`` (K, D) in place from ``grads`` (K, D).

        ``active`` is a (K, 1) bool column: inactive (diverged) members never move, even when
        their gradients or state hold NaN.
        """
        ...


def _frozen_zeroed(update: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``update`` (K, D) with the rows of inactive members zeroed (``active`` is (K, 1)).

    Divergence is rare, so the common case skips the full-size ``where`` (measured as the
    largest elementwise cost of a population step on CPU).
    """
    if bool(active.all()):
        return update
    return torch.where(active, update, 0.0)


class SGD:
    """SGD with (optionally Nesterov) momentum and L2 weight decay, as ``torch.optim.SGD``."""

    def __init__(self, nesterov: bool = False) -> None:
        self.nesterov = nesterov

    def init_state(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"momentum_buffer": torch.zeros_like(params)}

    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        state: dict[str, torch.Tensor],
        hp: HyperParams,
        lr_factor: float,
        active: torch.Tensor,
    ) -> None:
        if bool(hp.weight_decay.any()):  # a full-size op saved per step without L2
            grads = torch.addcmul(grads, hp.weight_decay, params)  # g + wd * p
        buf = state["momentum_buffer"]
        # torch starts the buffer at the first gradient; momentum * 0 + g is the same thing.
        buf.mul_(hp.momentum).add_(grads)
        direction = torch.addcmul(grads, hp.momentum, buf) if self.nesterov else buf
        # One fused full-size op, p - d * lr; frozen members' rows of d are zeroed first (they
        # may hold NaN), so every member's row takes the same arithmetic either way.
        params.addcmul_(_frozen_zeroed(direction, active), hp.lr * lr_factor, value=-1)


class Adam:
    """Adam (L2 decay added to the gradient) or AdamW (decoupled decay), as in torch.optim.

    ``hp.momentum`` plays the role of beta1, so a momentum sweep applies to Adam too.
    """

    def __init__(self, *, beta2: float = 0.999, eps: float = 1e-8, decoupled: bool = False) -> None:
        self.beta2 = beta2
        self.eps = eps
        self.decoupled = decoupled

    def init_state(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "exp_avg": torch.zeros_like(params),
            "exp_avg_sq": torch.zeros_like(params),
            # Per member, so that a frozen (diverged) member stops counting.
            "step": torch.zeros(params.shape[0], 1, dtype=params.dtype, device=params.device),
        }

    def step(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        state: dict[str, torch.Tensor],
        hp: HyperParams,
        lr_factor: float,
        active: torch.Tensor,
    ) -> None:
        lr = hp.lr * lr_factor
        if self.decoupled:
            params.mul_(torch.where(active, 1 - lr * hp.weight_decay, 1.0))
        else:
            grads = grads + hp.weight_decay * params
        beta1 = hp.momentum
        step = state["step"].add_(active.to(params.dtype)).clamp(min=1)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grads, 1 - beta1)
        exp_avg_sq.mul_(self.beta2).addcmul_(grads, grads, value=1 - self.beta2)
        bias1 = 1 - beta1**step
        bias2_sqrt = (1 - self.beta2**step).sqrt()
        denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
        params.sub_(_frozen_zeroed((lr / bias1) * exp_avg / denom, active))


def make_optimizer(
    name: str, *, nesterov: bool = False, beta2: float = 0.999
) -> FunctionalOptimizer:
    """Build a functional optimiser by name: ``sgd``, ``adam`` or ``adamw``."""
    if name == "sgd":
        return SGD(nesterov=nesterov)
    if name == "adam":
        return Adam(beta2=beta2)
    if name == "adamw":
        return Adam(beta2=beta2, decoupled=True)
    raise ValueError(f"unknown optimizer '{name}' (use sgd, adam or adamw)")
