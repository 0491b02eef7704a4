"""ParamSpace: a model's parameters as one flat vector, and directions in that space.

A point in weight space is a tensor ``theta`` of shape ``(D,)``; a batch of points is
``(B, D)``. The flat order follows ``model.named_parameters()``. :meth:`ParamSpace.unflatten`
returns *views* into ``theta`` (no copies), so gradients taken with respect to the named views
land in the flat vector's storage and the functional optimisers can update all ``D`` numbers
with a handful of fused ops.

Buffers (BatchNorm running statistics and counters) are not part of ``theta``. They are handled
explicitly: :meth:`ParamSpace.buffers` copies them out of the module, callers decide whether to
keep them fixed, batch them per member, or recompute them at a new point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["DirectionKind", "ParamSlot", "ParamSpace"]

DirectionKind = Literal["gaussian", "filter"]

# Li et al. (2018) add this to the direction's filter norm to avoid division by zero.
_FILTER_EPS = 1e-10


@dataclass(frozen=True)
class ParamSlot:
    """Where one named parameter lives inside the flat vector."""

    name: str
    shape: torch.Size
    start: int
    stop: int

    @property
    def numel(self) -> int:
        return self.stop - self.start


class ParamSpace:
    """Flat-vector view of ``model``'s parameters with functional evaluation.

    Args:
        model: any ``nn.Module``. It is used as a stateless template by
            :meth:`forward`; its own parameter values are only read by :meth:`flatten`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        slots: list[ParamSlot] = []
        offset = 0
        for name, param in model.named_parameters():
            slots.append(ParamSlot(name, param.shape, offset, offset + param.numel()))
            offset += param.numel()
        if offset == 0:
            raise ValueError("the model has no parameters")
        self.slots: tuple[ParamSlot, ...] = tuple(slots)
        self.dim: int = offset
        self.buffer_names: tuple[str, ...] = tuple(name for name, _ in model.named_buffers())

    # ------------------------------------------------------------------ layout

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(slot.name for slot in self.slots)

    def __repr__(self) -> str:
        return (
            f"ParamSpace(D={self.dim}, tensors={len(self.slots)}, buffers={len(self.buffer_names)})"
        )

    def flatten(self, tensors: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Concatenate named tensors (default: the module's parameters) into ``(D,)``.

        Batched tensors ``(B, *shape)`` give ``(B, D)``.
        """
        source = dict(self.model.named_parameters()) if tensors is None else tensors
        first = source[self.slots[0].name]
        lead = first.shape[: first.dim() - len(self.slots[0].shape)]
        parts = [source[s.name].detach().reshape(*lead, s.numel) for s in self.slots]
        return torch.cat(parts, dim=-1)  # cat always copies, so the result owns its storage

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named views into ``theta`` of shape ``(D,)`` or ``(B, D)``; no data is copied."""
        self._check(theta)
        lead = theta.shape[:-1]
        return {s.name: theta[..., s.start : s.stop].view(*lead, *s.shape) for s in self.slots}

    def buffers(self) -> dict[str, torch.Tensor]:
        """A copy of the module's buffers (e.g. BatchNorm running statistics)."""
        return {name: buf.detach().clone() for name, buf in self.model.named_buffers()}

    def load(self, theta: torch.Tensor, buffers: Mapping[str, torch.Tensor] | None = None) -> None:
        """Copy the point ``theta`` (D,) (and optionally buffers) into the module."""
        self._check(theta, batched=False)
        views = self.unflatten(theta)
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(views[name])
            if buffers is not None:
                for name, buf in self.model.named_buffers():
                    buf.copy_(buffers[name])

    def _check(self, theta: torch.Tensor, *, batched: bool | None = None) -> None:
        if theta.shape[-1:] != (self.dim,) or theta.dim() > 2:
            raise ValueError(
                f"expected a point of shape (D,) or (B, D) with D={self.dim}, got "
                f"{tuple(theta.shape)}"
            )
        if batched is False and theta.dim() != 1:
            raise ValueError(f"expected one point of shape ({self.dim},), got {tuple(theta.shape)}")

    # ------------------------------------------------------------------ evaluation

    def forward(
        self,
        theta: torch.Tensor,
        x: torch.Tensor,
        buffers: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Evaluate the model at ``theta`` (D,) on ``x`` (N, *input) -> logits (N, C).

        Buffers default to the module's own. The module's train/eval mode applies.
        """
        named = dict(self.unflatten(theta))
        if buffers is None:
            buffers = dict(self.model.named_buffers())
        return functional_call(self.model, (named, dict(buffers)), (x,), strict=True)

    # ------------------------------------------------------------------ directions

    def random_direction(
        self,
        generator: torch.Generator,
        *,
        kind: DirectionKind = "filter",
        center: torch.Tensor | None = None,
        count: int | None = None,
    ) -> torch.Tensor:
        """Gaussian direction(s) in weight space, optionally filter-normalised.

        Args:
            generator: the only source of randomness.
            kind: ``"gaussian"`` for a plain N(0, I) direction, ``"filter"`` for Li et al.'s
                filter normalisation relative to ``center``.
            center: the point the direction is normalised against (default: the module's
                current parameters). Required shape ``(D,)``.
            count: draw ``count`` directions at once, giving ``(count, D)``; ``None`` gives
                ``(D,)``.

        Returns:
            ``(D,)`` or ``(count, D)`` on the centre's device and dtype.
        """
        if center is None:
            center = self.flatten()
        self._check(center, batched=False)
        shape = (self.dim,) if count is None else (count, self.dim)
        # Draw on the generator's device, then move: generators are device-bound.
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=center.dtype)
        direction = noise.to(center.device)
        if kind == "gaussian":
            return direction
        if kind == "filter":
            return self.filter_normalize(direction, center)
        raise ValueError(f"unknown direction kind '{kind}' (use 'gaussian' or 'filter')")

    def filter_normalize(self, direction: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """Li et al. (2018) filter normalisation of ``direction`` (D,) or (B, D).

        For every parameter tensor with more than one dimension, each filter (slice along
        dim 0) is rescaled to the norm of the matching filter of ``center``:
        ``d_i <- d_i * |w_i| / (|d_i| + 1e-10)``. Biases and other 1-D parameters (BatchNorm
        scale and shift included) get a zero direction, as in the paper's ``biasbn`` setting.
        """
        self._check(direction)
        self._check(center, batched=False)
        out = torch.zeros_like(direction)
        lead = direction.shape[:-1]
        for s in self.slots:
            if len(s.shape) <= 1:
                continue  # biases and BatchNorm parameters: zero direction
            filters = s.shape[0]
            d = direction[..., s.start : s.stop].reshape(*lead, filters, -1)
            w = center[s.start : s.stop].reshape(filters, -1)
            scale = w.norm(dim=-1) / (d.norm(dim=-1) + _FILTER_EPS)
            out[..., s.start : s.stop] = (d * scale.unsqueeze(-1)).reshape(*lead, s.numel)
        return out

    def filter_mask(self) -> torch.Tensor:
        """Boolean ``(D,)`` mask of the coordinates that filter normalisation keeps."""
        mask = torch.zeros(self.dim, dtype=torch.bool)
        for s in self.slots:
            if len(s.shape) > 1:
                mask[s.start : s.stop] = True
        return mask
