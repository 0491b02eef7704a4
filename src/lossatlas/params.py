"""ParamSpace: a model's parameters as one flat vector, and directions in that space.

A point in weight space is a tensor ``theta`` of shape ``(D,)``; a batch of points is
``(B, D)``. The flat order follows ``model.named_parameters()``.

**Which parameters span the space** (``wrt=``, "with respect to"): by default only the
trainable ones (``requires_grad=True``); frozen parameters stay fixed at the module's values
and are passed to every forward pass as constants. ``wrt`` also takes ``"all"``, parameter
names or module-name prefixes, modules, parameter tensors (curvlinops' ``params`` list) or a
predicate ``(name, param) -> bool``; per-layer Hessians and one-layer surfaces follow. (In
curvlinops ``params`` means *which* parameters; in lossatlas ``params=`` is the *point*
``(D,)`` at which a probe is taken. The two never mix: the selection is always ``wrt=``, and
a list of tensors passed as ``params=`` is refused with a pointer to ``wrt=``.)

:meth:`ParamSpace.unflatten` returns *views* into ``theta`` (no copies), so gradients taken
with respect to the named views land in the flat vector's storage and the functional
optimisers can update all ``D`` numbers with a handful of fused ops.

Buffers (BatchNorm running statistics and counters) are not part of ``theta``. They are handled
explicitly: :meth:`ParamSpace.buffers` copies them out of the module, callers decide whether to
keep them fixed, batch them per member, or recompute them at a new point.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call

from lossatlas.errors import LossAtlasError

__all__ = ["DirectionKind", "ParamSelectionError", "ParamSlot", "ParamSpace", "Wrt", "check_point"]

DirectionKind = Literal["gaussian", "filter"]

Wrt = (
    str
    | nn.Module
    | torch.Tensor
    | Callable[[str, torch.Tensor], bool]
    | Iterable[str | nn.Module | torch.Tensor]
    | None
)
"""Which parameters span the space: see :func:`select_parameters`."""


class ParamSelectionError(LossAtlasError, ValueError):
    """A ``wrt=`` selection that names no parameter, or one the model does not have."""


def select_parameters(model: nn.Module, wrt: Wrt = None) -> list[str]:
    """Names (in ``named_parameters()`` order) of the parameters that ``wrt`` selects.

    ``wrt`` is ``None`` (the trainable parameters, ``requires_grad=True``), ``"all"``, a
    parameter name or module-name prefix (``"fc"`` selects ``fc.weight`` and ``fc.bias``), a
    submodule, a parameter tensor, an iterable of those, or a predicate ``(name, param) ->
    bool``.
    """
    named = list(model.named_parameters())
    if wrt is None:
        chosen = [n for n, p in named if p.requires_grad]
        if named and not chosen:
            raise ParamSelectionError(
                "every parameter of the model is frozen (requires_grad=False): unfreeze the "
                "ones to study, or pass wrt='all'"
            )
        return chosen
    if isinstance(wrt, str) and wrt == "all":
        return [n for n, _ in named]
    if callable(wrt) and not isinstance(wrt, (nn.Module, torch.Tensor)):
        return [n for n, p in named if wrt(n, p)]
    items = [wrt] if isinstance(wrt, (str, nn.Module, torch.Tensor)) else list(wrt)
    picked: set[str] = set()
    by_id = {id(p): n for n, p in named}
    module_names = {id(m): n for n, m in model.named_modules()}
    for item in items:
        if isinstance(item, str):
            hits = [n for n, _ in named if n == item or n.startswith(item + ".")]
            if not hits:
                raise ParamSelectionError(f"wrt names '{item}', which is no parameter or module")
            picked.update(hits)
        elif isinstance(item, nn.Module):
            prefix = module_names.get(id(item))
            if prefix is None:
                raise ParamSelectionError(
                    f"wrt holds a {type(item).__name__} that is not a submodule of the model"
                )
            picked.update(by_id[id(p)] for p in item.parameters() if id(p) in by_id)
        elif isinstance(item, torch.Tensor):
            if id(item) not in by_id:
                raise ParamSelectionError(
                    f"wrt holds a tensor of shape {tuple(item.shape)} that is no parameter of "
                    "the model"
                )
            picked.add(by_id[id(item)])
        else:
            raise ParamSelectionError(
                f"wrt items must be names, modules or parameters, got {type(item).__name__}"
            )
    return [n for n, _ in named if n in picked]


def check_point(params: Any, what: str = "params") -> torch.Tensor | None:
    """``params=`` (a point) as a tensor, refusing a curvlinops-style list of parameters."""
    if params is None or isinstance(params, torch.Tensor):
        return params
    if isinstance(params, (list, tuple)) and all(isinstance(p, torch.Tensor) for p in params):
        raise ParamSelectionError(
            f"{what}= is the point (D,) at which to measure; to choose which parameters span "
            "the space (curvlinops' params), pass wrt=[...] instead"
        )
    raise TypeError(f"{what} must be a (D,) tensor, got {type(params).__name__}")


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
        wrt: which parameters span the space (see :func:`select_parameters`); default the
            trainable ones. The others are :attr:`fixed`.
    """

    def __init__(self, model: nn.Module, wrt: Wrt = None) -> None:
        self.model = model
        chosen = set(select_parameters(model, wrt))
        slots: list[ParamSlot] = []
        fixed: list[str] = []
        offset = 0
        for name, param in model.named_parameters():
            if name not in chosen:
                fixed.append(name)
                continue
            slots.append(ParamSlot(name, param.shape, offset, offset + param.numel()))
            offset += param.numel()
        if offset == 0:
            if not slots and not fixed:
                raise ValueError("the model has no parameters")
            raise ParamSelectionError("the parameter selection (wrt=) spans no parameter")
        self.slots: tuple[ParamSlot, ...] = tuple(slots)
        self.dim: int = offset
        self.fixed_names: tuple[str, ...] = tuple(fixed)
        self.buffer_names: tuple[str, ...] = tuple(name for name, _ in model.named_buffers())

    def replica(self) -> ParamSpace:
        """The same slots over a deep copy of the model: for another thread, since evaluation
        loads points into the module it is given."""
        names = {slot.name for slot in self.slots}
        return ParamSpace(copy.deepcopy(self.model), wrt=lambda name, _: name in names)

    @property
    def spans_all(self) -> bool:
        """Whether every parameter of the module is part of the flat vector."""
        return not self.fixed_names

    def fixed(self, like: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The parameters held fixed (not spanned), detached; floating ones in ``like``'s
        dtype and on its device when given."""
        own = dict(self.model.named_parameters())
        out = {}
        for name in self.fixed_names:
            t = own[name].detach()
            if like is not None:
                t = t.to(device=like.device, dtype=like.dtype if t.is_floating_point() else None)
            out[name] = t
        return out

    # ------------------------------------------------------------------ layout

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(slot.name for slot in self.slots)

    def __repr__(self) -> str:
        fixed = f", fixed={len(self.fixed_names)}" if self.fixed_names else ""
        return (
            f"ParamSpace(D={self.dim}, tensors={len(self.slots)}{fixed}, "
            f"buffers={len(self.buffer_names)})"
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
                if name in views:
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
        return self.call(theta, (x,), {}, buffers)

    def call(
        self,
        theta: torch.Tensor,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None = None,
        buffers: Mapping[str, torch.Tensor] | None = None,
    ) -> Any:
        """``model(*args, **kwargs)`` at ``theta`` (D,): the module's raw output.

        Fixed (not spanned) parameters come from the module, in ``theta``'s dtype.
        """
        named = {**self.fixed(theta), **self.unflatten(theta)}
        if buffers is None:
            buffers = dict(self.model.named_buffers())
        return functional_call(
            self.model, (named, dict(buffers)), tuple(args), dict(kwargs or {}), strict=True
        )

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
