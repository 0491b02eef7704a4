"""Grids of small models as batched matmuls over blocks of points (the stacked fast path).

A plane of a small MLP costs little per point: on the benchmark's 40->32->32->10 MLP one
full-batch forward is ~19 MFLOP, and a per-point loop (or ``vmap`` over points) spends most of
its time on per-op overhead and on skinny matmuls. When the first-layer shortcut applies
(``_shortcut``) and the tail after the first layer is a chain of ``Linear`` layers and
activations (:func:`~lossatlas.models.stacked.trace_ops`), a block of ``P`` points on ``S``
samples runs as a handful of big ops instead:

1. first-layer output of every point: ``stack[0] + coefs @ stack[1:]`` (one ``addmm``; the
   first layer is affine in the grid coordinates, so ``X @ W0`` etc. are computed once);
2. the tail's parameters of every point: ``base_tail + coefs @ terms_tail`` (one ``addmm``);
3. per ``Linear``: one ``baddbmm`` over points, on *features-first* values ``(P, width, S)``
   (see :meth:`~lossatlas.models.stacked.ops.Linear.forward_features_first`); activations in
   place;
4. summed cross-entropy and hits per point, reduced over the class dimension (dim 1), which
   vectorises across samples.

The numbers are those of the plain forward pass up to float rounding (tests compare against
a naive per-point loop in float64). Only the default loss on class labels takes this path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lossatlas.models.stacked import NotTraceable, trace_ops
from lossatlas.models.stacked.ops import Activation, Linear, Op
from lossatlas.params import ParamSpace
from lossatlas.probes._shortcut import InputLinearShortcut

__all__ = ["STACKED_BLOCK_BYTES", "STACKED_SAMPLES", "StackedTail", "find_stacked_tail"]

# Samples per block: 3600 MNIST-1D samples in 8 blocks of 450. With STACKED_BLOCK_BYTES this
# gave 32 points x 450 samples for the 32-wide MLP, the fastest of the (points, samples) pairs
# measured on one thread (1.20 s for the 51x51 plane, against 1.29 s at 32 x 900, 1.84 s at
# 16 x 3600 and 2.23 s at 256 x 225): one activation of the block (1.8 MB) stays in cache.
STACKED_SAMPLES = 512

# Bytes of one (points x widest x samples) activation of a block.
STACKED_BLOCK_BYTES = 2 * 2**20


@dataclass
class StackedTail:
    """The tail of a shortcut model as stacked ops, evaluated features-first.

    Attributes:
        shortcut: the first-layer split the tail belongs to.
        ops: ``Linear`` and ``Activation`` ops over the tail's flat parameters (in the order of
            ``shortcut.tail_index``).
        widest: the largest feature count of any value in the chain (first layer included).
    """

    shortcut: InputLinearShortcut
    ops: list[Op]
    widest: int

    def tail_params(self, base: Tensor | None, terms: Tensor, coefs: Tensor) -> Tensor:
        """``(P, D_tail)``: the tail's parameters at every point ``base + coefs @ terms``."""
        index = self.shortcut.tail_index.to(terms.device)
        terms_t = terms.index_select(1, index)
        if base is None:
            return coefs @ terms_t
        return torch.addmm(base.index_select(0, index).unsqueeze(0), coefs, terms_t)

    def loss_hits(
        self,
        first: Tensor,
        width: int,
        coefs: Tensor,
        params: Tensor,
        has_base: bool,
        target: Tensor,
        before: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Summed cross-entropy and hits ``(P,)`` of ``P`` points on one block of samples.

        Args:
            first: ``(T, width * S)`` the precomputed first-layer outputs, features-first
                (row 0 the base's when ``has_base``, then one per direction).
            width: the first layer's output features.
            coefs: ``(P, K)`` the points' coordinates.
            params: ``(P, D_tail)`` from :meth:`tail_params`.
            target: ``(S,)`` class labels (non-negative).
            before: ``(C, S)`` bool, ``class < target``: breaks ties as ``argmax`` does (first).
        """
        n_points = coefs.shape[0]
        samples = first.shape[1] // width
        pre = torch.addmm(first[:1], coefs, first[1:]) if has_base else coefs @ first
        v = pre.view(n_points, width, samples)
        for op in self.ops:
            if isinstance(op, Linear):
                v = op.forward_features_first(v, params)
            elif isinstance(op, Activation) and op.name == "relu":
                v = v.relu_()
            else:
                v, _ = op.forward(v, params)
        return _loss_hits(v, target, before)


def _loss_hits(logits: Tensor, target: Tensor, before: Tensor) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy and ``argmax == target`` counts of ``logits`` ``(P, C, S)``.

    ``argmax`` over the class dimension of this layout measured 10x slower than the rest of a
    block together, so a hit is ``target logit == max`` with no earlier class at the max (what
    ``argmax``'s first-index rule gives); blocks holding a NaN take ``argmax`` itself.
    """
    n_points, _, samples = logits.shape
    index = target.view(1, 1, samples).expand(n_points, 1, samples)
    picked = logits.gather(1, index).squeeze(1)  # (P, S)
    loss = (torch.logsumexp(logits, dim=1) - picked).sum(dim=-1)
    top = logits.amax(dim=1)  # (P, S)
    if bool(torch.isnan(top).any()):
        hits = (logits.argmax(dim=1) == target).sum(dim=-1)
    else:
        earlier = ((logits == top.unsqueeze(1)) & before).any(dim=1)
        hits = ((picked == top) & ~earlier).sum(dim=-1)
    return loss, hits


def find_stacked_tail(shortcut: InputLinearShortcut) -> tuple[StackedTail | None, str]:
    """The stacked tail of ``shortcut``, or ``(None, reason)`` when the tail is not a plain
    chain of ``Linear`` layers and activations."""
    if type(shortcut.first) is not nn.Linear:
        return None, f"the first layer is a {type(shortcut.first).__name__}, not a Linear"
    if next(shortcut.tail.parameters(), None) is None:
        # A one-layer model: nothing past the first layer to stack (the shortcut suffices).
        return None, "no parameters past the first layer"
    try:
        ops = trace_ops(ParamSpace(shortcut.tail))
    except NotTraceable as why:
        return None, str(why)
    if not all(isinstance(op, (Linear, Activation)) for op in ops):
        return None, "the tail holds ops other than Linear and activations"
    first_out = shortcut.first_slots[0][1].shape[0]
    widths = [first_out] + [op.weight.shape[0] for op in ops if isinstance(op, Linear)]
    return StackedTail(shortcut, ops, max(widths)), ""
