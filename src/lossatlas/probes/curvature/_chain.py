"""The exact Hessian of a plain layer chain under cross-entropy, many columns per pass.

For models that :func:`~lossatlas.models.stacked.trace_ops` turns into a chain of ``Linear``,
``Conv1d`` (im2col), ReLU or tanh, ``Flatten`` and reshapes, column ``c`` of the Hessian is
computed by a hand-written forward-over-reverse product whose tangent is the basis vector
``e_c``. Three facts make it cheap:

* The primal pass (activations, and the loss gradient at every op's output) is the same for
  every column, so it is run once per sample chunk; only tangents carry the column axis ``T``.
  Every tangent op is then one matmul with the *shared* weights over ``T x samples`` rows,
  where a ``vmap`` over columns needs a grouped convolution.
* ``e_c`` lives in one layer ``j``: tangents before ``j`` are zero, so the tangent pass starts
  at ``j`` with a gather (``x W^T`` for a one-hot ``W`` is one input feature), not a matmul.
* ``H`` is symmetric, so a column of layer ``j`` is only taken on the rows of layers ``>= j``;
  the rows of earlier layers are those layers' own columns, transposed. The tangent backward
  pass therefore stops at layer ``j``, and a block of the last layer (the head) costs almost
  nothing.

The within-op rules (``W`` shared, ``g`` the primal gradient at the op's output, dots are
tangents): ``d(g^T x) = ġ^T x + g^T ẋ`` for a weight, ``ġ W`` for the input; ``ġ ⊙ σ'(x) +
g ⊙ σ''(x) ⊙ ẋ`` for an activation (``σ'' = 0`` for ReLU); ``ġ_z = (diag p - p p^T) ż / n`` for
the mean cross-entropy on logits ``z`` with ``p = softmax z``.

Blocks of columns are independent. On CPU they run on ``torch.get_num_threads()`` Python
threads of one torch thread each (as in :mod:`~lossatlas.probes.curvature.dense`), so every
column is computed as on one thread and the Hessian is the same on any number of cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lossatlas.models.stacked import NotTraceable, trace_ops
from lossatlas.models.stacked.ops import Activation, ChannelsLast, Conv1d, Linear, Op
from lossatlas.params import ParamSlot, ParamSpace
from lossatlas.threads import on_threads

__all__ = ["ChainHessian"]

# Activations whose second derivative the tangent backward pass knows.
_ACTIVATIONS = ("relu", "tanh")


@dataclass
class _Primal:
    """One sample chunk's primal pass, shared by every block of columns.

    ``inputs[i]`` and ``saved[i]``: op ``i``'s input ``(1, B, ...)`` and what its forward kept;
    ``grads[i]``: the gradient of the loss (a sum over the chunk, divided by the number of
    samples in the whole data) at op ``i``'s output; ``probs``: ``softmax`` of the logits
    ``(1, B, C)``.
    """

    params: Tensor
    inputs: list[Tensor]
    saved: list[Any]
    grads: list[Tensor | None]
    probs: Tensor
    samples: int


@dataclass(frozen=True)
class _Layer:
    """An op with parameters: where its columns and rows are, and each column's one-hot entry.

    ``columns`` ``(P,)``: the op's flat indices, weight then bias. ``outputs`` and
    ``features`` ``(P,)``: the output unit and input feature (im2col column for a
    convolution; the constant-one feature for a bias) of each. ``rows`` ``(R,)``: the flat
    indices of this op and every later one, the rows its columns are taken on.
    """

    op_index: int
    columns: Tensor
    outputs: Tensor
    features: Tensor
    rows: Tensor


class ChainHessian:
    """The exact Hessian of the mean cross-entropy of a traced chain (see the module docstring).

    Raises :class:`~lossatlas.models.stacked.NotTraceable` on construction when the model is
    not such a chain, or has an activation other than ReLU or tanh.
    """

    def __init__(self, space: ParamSpace) -> None:
        self.space = space
        self.ops: list[Op] = trace_ops(space)
        for op in self.ops:
            if isinstance(op, Activation) and op.name not in _ACTIVATIONS:
                raise NotTraceable(f"activation {op.name} has no second derivative here")
        layers = [i for i, op in enumerate(self.ops) if op.has_params]
        self._first = layers[0]
        indices = [_indices(self.ops[i]) for i in layers]
        self.layers = [
            _layer(self.ops[i], i, indices[k], torch.cat(indices[k:])) for k, i in enumerate(layers)
        ]

    def blocks(self, block_size: int) -> list[tuple[_Layer, slice]]:
        """The column blocks: at most ``block_size`` columns of one layer each, costliest first
        (an early layer's tangents pass through every later one)."""
        return [
            (layer, slice(s, s + block_size))
            for layer in self.layers
            for s in range(0, layer.columns.numel(), block_size)
        ]

    def accumulate(
        self,
        total: Tensor,
        theta: Tensor,
        x: Tensor,
        y: Tensor,
        samples: int,
        block_size: int,
        workers: int,
    ) -> None:
        """Add one chunk's part of every column to ``total`` ``(D, D)``: row ``c`` of ``total``
        gets column ``c`` of the Hessian on the rows of its layer and the later ones.

        ``x`` ``(B, *input)`` and ``y`` ``(B,)`` class labels are the chunk; ``samples`` is the
        number of samples of the whole data (the loss is their mean). ``workers`` Python
        threads (one torch thread each) share the blocks on CPU.
        """
        with torch.no_grad():
            primal = self._primal(theta, x.to(theta.dtype), y, samples)
            todo = self.blocks(block_size)

            def run(block: tuple[_Layer, slice]) -> None:
                layer, part = block
                with torch.no_grad():  # grad mode is per thread
                    values = self._block(primal, layer, part)
                    columns = layer.columns[part].to(total.device)
                    total[columns.unsqueeze(1), layer.rows.to(total.device)] += values

            if workers <= 1 or theta.device.type != "cpu" or len(todo) < 2:
                for block in todo:
                    run(block)
            else:
                on_threads(run, todo, workers)

    def symmetric(self, total: Tensor) -> Tensor:
        """The Hessian from :meth:`accumulate`'s rows: each layer's cross terms with earlier
        layers are their rows, transposed (written in place, where ``total`` is still zero);
        then ``(H + H^T) / 2``, which only removes rounding."""
        for k, later in enumerate(self.layers):
            for earlier in self.layers[:k]:
                upper = total[earlier.columns.unsqueeze(1), later.columns]
                total[later.columns.unsqueeze(1), earlier.columns] = upper.T
        return (total + total.T) / 2

    # ------------------------------------------------------------------------------ internals

    def _primal(self, theta: Tensor, x: Tensor, y: Tensor, samples: int) -> _Primal:
        params = theta.unsqueeze(0)
        value = x.unsqueeze(0)
        inputs: list[Tensor] = []
        saved: list[Any] = []
        for op in self.ops:
            inputs.append(value)
            value, keep = op.forward(value, params)
            saved.append(keep)
        probs = torch.softmax(value, dim=-1)
        grad: Tensor | None = (probs - F.one_hot(y, probs.shape[-1]).to(probs.dtype)) / samples
        grads: list[Tensor | None] = [None] * len(self.ops)
        scratch = torch.empty_like(params)
        for i in range(len(self.ops) - 1, self._first - 1, -1):
            assert grad is not None
            grads[i] = grad
            grad = self.ops[i].backward(grad, saved[i], params, scratch, i > self._first)
        return _Primal(params, inputs, saved, grads, probs, samples)

    def _block(self, primal: _Primal, layer: _Layer, part: slice) -> Tensor:
        """``(T, R)``: the block's columns on ``layer.rows``, for one chunk."""
        start = layer.op_index
        tangent = self._start(primal, layer, part)
        tangent_inputs: dict[int, Tensor] = {}
        for i in range(start + 1, len(self.ops)):
            tangent_inputs[i] = tangent
            tangent = self._tangent_forward(i, primal, tangent)
        p = primal.probs
        grad = (p * tangent - p * (p * tangent).sum(-1, keepdim=True)) / primal.samples
        pieces: list[Tensor] = []
        for i in range(len(self.ops) - 1, start - 1, -1):
            grad, rows = self._tangent_backward(i, primal, grad, tangent_inputs.get(i))
            pieces = rows + pieces
        return torch.cat(pieces, dim=1)

    def _start(self, primal: _Primal, layer: _Layer, part: slice) -> Tensor:
        """The tangent of layer ``j``'s output for one-hot tangents of its own parameters."""
        op = self.ops[layer.op_index]
        outputs, features = layer.outputs[part], layer.features[part]
        count = outputs.numel()
        if isinstance(op, Conv1d):
            inputs = primal.saved[layer.op_index][0][0]  # patches (B * L_out, k * C_in)
        else:
            inputs = primal.inputs[layer.op_index][0]  # (B, in)
        ones = inputs.new_ones(inputs.shape[0], 1)
        read = torch.cat([inputs, ones], dim=1)[:, features].T  # (T, rows)
        width = op.weight.shape[0]  # type: ignore[attr-defined]
        tangent = inputs.new_zeros(count, inputs.shape[0], width)
        tangent[torch.arange(count, device=inputs.device), :, outputs] = read
        if isinstance(op, Conv1d):
            batch = primal.inputs[layer.op_index].shape[1]
            tangent = tangent.view(count, batch, -1, width)
        return tangent

    def _tangent_forward(self, i: int, primal: _Primal, tangent: Tensor) -> Tensor:
        op, params = self.ops[i], primal.params
        if isinstance(op, Linear):
            return tangent @ _weight(params, op.weight).T
        if isinstance(op, Conv1d):
            patches = op.patches(tangent)  # (T, B * L_out, k * C_in)
            out = patches @ op.tap_major(params)[0].T
            return out.view(tangent.shape[0], tangent.shape[1], -1, op.weight.shape[0])
        if isinstance(op, Activation):
            y = primal.saved[i]
            return tangent * (y > 0) if op.name == "relu" else tangent * (1 - y * y)
        return op.forward(tangent, params)[0]  # layout changes and reshapes

    def _tangent_backward(
        self, i: int, primal: _Primal, grad: Tensor, tangent_in: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """The tangent of the gradient at op ``i``'s input, and of its parameters' gradients
        ``[(T, weight), (T, bias)]``. ``tangent_in`` is ``None`` at the block's own layer,
        whose input has no tangent (and whose input gradient is not needed)."""
        op, g = self.ops[i], primal.grads[i]
        count = grad.shape[0]
        if isinstance(op, (Linear, Conv1d)):
            assert g is not None
            return self._layer_backward(op, i, primal, grad, g, tangent_in)
        if isinstance(op, Activation):
            y = primal.saved[i]
            if op.name == "relu":
                return grad * (y > 0), []
            assert g is not None and tangent_in is not None
            slope = 1 - y * y
            return grad * slope - 2 * g * y * slope * tangent_in, []
        if isinstance(op, ChannelsLast):  # ChannelsFirst too: a transpose is its own inverse
            return grad.transpose(2, 3).contiguous(), []
        return grad.reshape(count, *primal.inputs[i].shape[1:]), []  # Flatten and Reshape

    @staticmethod
    def _layer_backward(
        op: Linear | Conv1d,
        i: int,
        primal: _Primal,
        grad: Tensor,
        g: Tensor,
        tangent_in: Tensor | None,
    ) -> tuple[Tensor, list[Tensor]]:
        """:meth:`_tangent_backward` for a layer with parameters (``g``: its primal output
        gradient)."""
        count, params = grad.shape[0], primal.params
        flat = grad.reshape(count, -1, grad.shape[-1])  # (T, rows, out)
        conv = isinstance(op, Conv1d)
        inputs = primal.saved[i][0][0] if conv else primal.inputs[i][0]  # (rows, in)
        d_weight = flat.transpose(1, 2) @ inputs  # (T, out, in): ġ^T x
        if tangent_in is not None:  # + g^T ẋ
            read = op.patches(tangent_in) if isinstance(op, Conv1d) else tangent_in
            d_weight += g.reshape(-1, g.shape[-1]).T @ read
        if isinstance(op, Conv1d):
            c_out, c_in, kernel = op.weight.shape
            d_weight = d_weight.view(count, c_out, kernel, c_in).transpose(2, 3)
        rows = [d_weight.reshape(count, -1)]
        if op.bias is not None:
            rows.append(flat.sum(dim=1))
        if tangent_in is None:
            return grad, rows
        if isinstance(op, Conv1d):
            _, padded_shape, length = primal.saved[i][1:]
            d_patches = flat @ op.tap_major(params)[0]
            taps = (count, tangent_in.shape[1], -1, op.weight.shape[2], op.weight.shape[1])
            return op.col2im(d_patches.view(taps), padded_shape, length), rows
        return grad @ _weight(params, op.weight), rows


def _weight(params: Tensor, slot: ParamSlot) -> Tensor:
    """Slot ``slot`` of the one-member ``(1, D)`` parameters as its own shape."""
    return params[0, slot.start : slot.stop].view(slot.shape)


def _indices(op: Op) -> Tensor:
    slots = [op.weight] + ([op.bias] if op.bias is not None else [])  # type: ignore[attr-defined]
    return torch.cat([torch.arange(s.start, s.stop) for s in slots])


def _layer(op: Op, op_index: int, columns: Tensor, rows: Tensor) -> _Layer:
    """Each column's output unit and input feature (the one-hot entry of its tangent)."""
    weight: ParamSlot = op.weight  # type: ignore[attr-defined]
    position = torch.arange(weight.numel)
    if isinstance(op, Conv1d):
        _, c_in, kernel = weight.shape
        outputs = position // (c_in * kernel)
        # im2col columns are taps outermost: (tap, channel) -> tap * C_in + channel.
        features = (position % kernel) * c_in + (position // kernel) % c_in
        width = c_in * kernel
    else:
        width = weight.shape[1]
        outputs, features = position // width, position % width
    if op.bias is not None:  # type: ignore[attr-defined]
        units = torch.arange(weight.shape[0])
        outputs = torch.cat([outputs, units])
        features = torch.cat([features, torch.full_like(units, width)])
    return _Layer(op_index, columns, outputs, features, rows)
