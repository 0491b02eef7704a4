"""The ops of a stacked program: K members' layers at once, with hand-written backward passes.

A value is ``(K, B, *features)``: members first, what batched matmuls want. Runs of
convolutions keep their activations channels-last, ``(K, B, L, C)``, so each one is an
im2col view and one ``baddbmm``; ``ChannelsLast`` / ``ChannelsFirst`` convert at the edges of
such a run. Parameters are read from, and gradients written into, one flat ``(K, D)``
buffer through per-layer views, so a step never concatenates gradients.

``forward(x, params)`` returns the output and what ``backward`` needs;
``backward(grad, saved, params, grads, need_input)`` writes the op's parameter gradients into
``grads`` and returns the gradient of its input (``None`` when ``need_input`` is false).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lossatlas.params import ParamSlot

__all__ = [
    "Activation",
    "ChannelsFirst",
    "ChannelsLast",
    "Conv1d",
    "Flatten",
    "Linear",
    "Op",
    "Reshape",
]


def _view(flat: Tensor, slot: ParamSlot) -> Tensor:
    """Slot ``slot`` of a ``(K, D)`` buffer as ``(K, *shape)``: a view, no copy."""
    return flat[:, slot.start : slot.stop].view(flat.shape[0], *slot.shape)


class Op:
    """One step of the chain. ``layout``: ``"channels_last"`` for convolutions, else ``None``."""

    layout: str | None = None
    has_params: bool = False

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def backward(
        self, grad: Tensor, saved: Any, params: Tensor, grads: Tensor, need_input: bool
    ) -> Tensor | None:
        raise NotImplementedError


@dataclass(eq=False)
class Linear(Op):
    """``y = x W^T + b`` per member, ``x`` ``(K, B, in)``: ``baddbmm`` over members."""

    weight: ParamSlot
    bias: ParamSlot | None
    has_params: bool = True

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Any]:
        w = _view(params, self.weight)  # (K, out, in)
        if self.bias is None:
            return torch.bmm(x, w.transpose(1, 2)), x
        b = _view(params, self.bias).unsqueeze(1)  # (K, 1, out)
        return torch.baddbmm(b, x, w.transpose(1, 2)), x

    def forward_features_first(self, x: Tensor, params: Tensor) -> Tensor:
        """The same layer on features-first values: ``x`` ``(K, in, B)`` -> ``(K, out, B)``.

        Forward only (grid evaluation). With few outputs (a 10-class head) this layout keeps the
        samples as the long side of each matmul: on this CPU ``(B, 32) @ (32, 10)`` per member ran
        at ~10 GFLOP/s, ``(10, 32) @ (32, B)`` at 40-60.
        """
        w = _view(params, self.weight)  # (K, out, in)
        if self.bias is None:
            return torch.bmm(w, x)
        return torch.baddbmm(_view(params, self.bias).unsqueeze(2), w, x)

    def backward_features_first(
        self, grad: Tensor, x: Tensor, params: Tensor, grads: Tensor, need_input: bool
    ) -> Tensor | None:
        """The backward of :meth:`forward_features_first` for samples-first inputs.

        ``grad`` ``(K, out, B)`` is the output's gradient, features-first; ``x`` ``(K, B, in)``
        the input. Writes the parameters' gradients into ``grads`` and returns the input's,
        ``(K, B, in)`` (``None`` when ``need_input`` is false).
        """
        torch.bmm(grad, x, out=_view(grads, self.weight))
        if self.bias is not None:
            torch.sum(grad, dim=2, out=_view(grads, self.bias))
        return torch.bmm(grad.transpose(1, 2), _view(params, self.weight)) if need_input else None

    def backward(
        self, grad: Tensor, saved: Any, params: Tensor, grads: Tensor, need_input: bool
    ) -> Tensor | None:
        torch.bmm(grad.transpose(1, 2), saved, out=_view(grads, self.weight))
        if self.bias is not None:
            torch.sum(grad, dim=1, out=_view(grads, self.bias))
        return torch.bmm(grad, _view(params, self.weight)) if need_input else None


@dataclass(eq=False)
class Conv1d(Op):
    """Every member's ``Conv1d`` as im2col + ``baddbmm`` on channels-last ``(K, B, L, C)``.

    On 2 CPU cores this measured far faster than one convolution with ``groups = K`` (whose
    backward dominated the step) for the small channel counts of MNIST-1D models.
    """

    weight: ParamSlot
    bias: ParamSlot | None
    has_params: bool = True
    stride: int = 1
    padding: int = 0
    layout: str | None = "channels_last"

    def tap_major(self, params: Tensor) -> Tensor:
        """Weights as ``(K, C_out, k * C_in)``, taps outermost: the order of the patches."""
        members = params.shape[0]
        c_out = self.weight.shape[0]
        return _view(params, self.weight).transpose(2, 3).reshape(members, c_out, -1)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Any]:
        members, batch, length, channels = x.shape
        c_out = self.weight.shape[0]
        # (K, B * L_out, k * C): each window's taps in order, channels contiguous innermost, so
        # the im2col copy moves whole channel rows.
        patches = self.patches(x)
        l_out = patches.shape[1] // batch
        padded_shape = torch.Size((*x.shape[:2], length + 2 * self.padding, channels))
        w = self.tap_major(params)
        if self.bias is None:
            y = torch.bmm(patches, w.transpose(1, 2))
        else:
            y = torch.baddbmm(_view(params, self.bias).unsqueeze(1), patches, w.transpose(1, 2))
        return y.view(members, batch, l_out, c_out), (patches, w, padded_shape, length)

    def backward(
        self, grad: Tensor, saved: Any, params: Tensor, grads: Tensor, need_input: bool
    ) -> Tensor | None:
        patches, w, padded_shape, length = saved
        members, batch, l_out, c_out = grad.shape
        g = grad.reshape(members, batch * l_out, c_out)
        c_in, kernel = self.weight.shape[1], self.weight.shape[2]
        if kernel * c_in < c_out:
            # A narrow patch (the first layer on one input channel: k * C_in = 5 against 25
            # outputs) gives the matmul a skinny output the other way round: on one thread,
            # 8 members x 2,432 rows, 185 us this way against 664 us.
            d_w_t = torch.bmm(patches.transpose(1, 2), g)  # (K, k * C_in, C_out)
            d_w = d_w_t.view(members, kernel, c_in, c_out).permute(0, 3, 2, 1)
        else:
            d_w = torch.bmm(g.transpose(1, 2), patches)  # (K, C_out, k * C_in), taps outermost
            d_w = d_w.view(members, c_out, kernel, c_in).transpose(2, 3)
        _view(grads, self.weight).copy_(d_w)
        if self.bias is not None:
            torch.sum(g, dim=1, out=_view(grads, self.bias))
        if not need_input:
            return None
        d_patches = torch.bmm(g, w).view(members, batch, l_out, kernel, c_in)
        return self.col2im(d_patches, padded_shape, length)

    def col2im(self, d_patches: Tensor, padded_shape: torch.Size, length: int) -> Tensor:
        """The gradient of the input ``(K, B, L, C)`` from that of its patches
        ``(K, B, L_out, k, C)``: each kernel tap adds back where it read. ``padded_shape``'s
        leading dimension may differ from ``d_patches``' (tangents of one member)."""
        l_out = d_patches.shape[2]
        d_padded = d_patches.new_zeros(d_patches.shape[0], *padded_shape[1:])
        stop = self.stride * (l_out - 1) + 1
        for j in range(d_patches.shape[3]):
            d_padded[:, :, j : j + stop : self.stride].add_(d_patches[:, :, :, j])
        return d_padded[:, :, self.padding : self.padding + length]

    def patches(self, x: Tensor) -> Tensor:
        """im2col of ``x`` ``(K, B, L, C)``: ``(K, B * L_out, k * C)``, taps outermost."""
        members, batch, _, channels = x.shape
        kernel = self.weight.shape[2]
        padded = F.pad(x, (0, 0, self.padding, self.padding)) if self.padding else x
        windows = padded.unfold(2, kernel, self.stride).transpose(3, 4)
        return windows.reshape(members, batch * windows.shape[2], kernel * channels)


@dataclass(eq=False)
class ChannelsLast(Op):
    """Per-sample ``(C, L)`` -> ``(L, C)``, entering a run of convolutions."""

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Any]:
        return x.transpose(2, 3).contiguous(), None

    def backward(
        self, grad: Tensor, saved: Any, params: Tensor, grads: Tensor, need_input: bool
    ) -> Tensor | None:
        return grad.transpose(2, 3).contiguous() if need_input else None


@dataclass(eq=False)
class ChannelsFirst(ChannelsLast):
    """Per-sample ``(L, C)`` -> ``(C, L)``, leaving a run of convolutions (its own inverse)."""


@dataclass(eq=False)
class Activation(Op):
    """``relu``, ``tanh`` or ``gelu``, elementwise; backward by torch's own kernels."""

    name: str
    approximate: str = "none"

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Any]:
        if self.name == "relu":
            y = torch.relu(x)
            return y, y
        if self.name == "tanh":
            y = torch.tanh(x)
            return y, y
        return F.gelu(x, approximate=self.approximate), x

    def backward(
        self, grad: Tensor, saved: Any, params: Tensor, grads: Tensor, need_input: bool
    ) -> Tensor | None:
        if not need_input:
            return None
        if self.name == "relu":
            return torch.ops.aten.threshold_backward(grad, saved, 0)
        if self.name == "tanh":
            return torch.ops.aten.tanh_backward(grad, saved)
        return torch.ops.aten.gelu_backward(grad, saved, approximate=self.approximate)


@dataclass(eq=False)
class Flatten(Op):
    """Flatten every dimension after the two leading ones (members and batch)."""

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Any]:
        return x.reshape(x.shape[0], x.shape[1], -1), x.shape

    def backward(
        self, grad: Tensor, saved: Any, params: Tensor, grads: Tensor, need_input: bool
    ) -> Tensor | None:
        return grad.reshape(saved) if need_input else None


@dataclass(eq=False)
class Reshape(Op):
    """A per-sample reshape to ``shape``."""

    shape: tuple[int, ...]

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Any]:
        return x.reshape(x.shape[0], x.shape[1], *self.shape), x.shape

    def backward(
        self, grad: Tensor, saved: Any, params: Tensor, grads: Tensor, need_input: bool
    ) -> Tensor | None:
        return grad.reshape(saved) if need_input else None
