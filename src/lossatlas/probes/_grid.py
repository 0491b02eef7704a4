"""The engine behind :mod:`lossatlas.probes.subspace`: many points of one subspace, batched.

Every probe in ``subspace`` (lines, planes, N-D grids, rays, simplices) evaluates points of the
form ``theta_p = base + coefs[p] @ terms`` with ``terms`` (K, D), ``coefs`` (P, K) and an
optional ``base`` (D,). :class:`SubspaceEvaluator` turns that into
:func:`~lossatlas.evaluate.evaluate_points` calls:

1. **First-layer shortcut** (``_shortcut``): when the model's first parametrised layer is a
   Linear/Conv on the input, its output on the subspace is ``f(base) + sum_k c_k f(e_k)``; the
   ``K + 1`` maps are computed once per sample block and each point only combines them.
2. **BatchNorm recompute** (``bn_data``): per point, fresh running statistics are accumulated
   over ``bn_data`` in train mode (BatchNorm layers only; dropout stays off so the result is
   deterministic), with the cumulative average of ``momentum=None``, then used in eval mode.
3. **Stacked tail** (``_stacked``): with the shortcut, a tail of Linear layers and activations
   and the default loss, ``auto`` evaluates blocks of points as batched matmuls over points
   wherever it would otherwise ``vmap`` (small passes); big passes keep the per-point loop.
4. **Memory budget**: points are materialised and evaluated in chunks sized from an estimate
   of the bytes each point needs (see :func:`activation_bytes_per_sample` and
   :meth:`SubspaceEvaluator._plan`).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lossatlas.batchnorm import bn_batches, norm_modules, recompute_bn_statistics
from lossatlas.data.batches import Batch, BatchAdapter, Batches
from lossatlas.evaluate import (
    LOOP_MIN_SAMPLES,
    Autocast,
    LossFn,
    Strategy,
    autocast_context,
    evaluate_points,
    precision_error,
)
from lossatlas.models.stacked.ops import Linear
from lossatlas.params import ParamSpace
from lossatlas.probes._shortcut import (
    InputLinearShortcut,
    TermStack,
    find_shortcut,
    map_buffers,
)
from lossatlas.probes._stacked import (
    STACKED_BLOCK_BYTES,
    STACKED_SAMPLES,
    StackedTail,
    find_stacked_tail,
)
from lossatlas.threads import even_shares, on_threads, thread_count

__all__ = [
    "ACTIVATION_SAFETY",
    "AUTOCAST_CHECK_POINTS",
    "SubspaceEvaluator",
    "activation_bytes_per_sample",
]

# With autocast, this many of the points (spread evenly over them, the first and last included)
# are evaluated again in full precision, and the largest loss error among them is reported.
AUTOCAST_CHECK_POINTS = 5

# The one-sample trace below sees the tensors Python code creates, not kernel scratch space
# (GEMM packing, the loss's log-softmax, vmap's expanded copies); doubling covers those.
ACTIVATION_SAFETY = 2.0

# vmap streams (points x samples x width) tensors through memory; past ~1k samples per call the
# per-call overhead it saves is already amortised, so larger chunks only cost cache misses.
_VMAP_SAMPLE_CHUNK = 1024

# On CPU, `auto` evaluates points one at a time only when one point's pass is big: at least
# LOOP_MIN_SAMPLES samples *and* this many bytes of activations (the estimate of _plan). Below
# it every op is small, per-op overhead dominates, and vmap over a group of points amortises it:
# for the benchmark's 40->32->32->10 MLP on 3600 samples (2.8 MB per pass), vmap over groups of
# 16 points x 1200 samples ran at 0.47 ms/point against 0.55 for the loop (and loss-landscapes'
# 0.56), and on a busy machine, where each multi-threaded op may wait for a descheduled thread,
# the loop fell 10x behind. The 256-wide MLP (22 MB per pass) stays a loop: its passes are
# matmul-bound and vmap would add a bias pass per layer (vmap measured 20% slower there).
LOOP_MIN_PASS_BYTES = 8 * 2**20

# Size of one vmap group on CPU (points x samples x activation bytes): cache-sized, since the
# group's activations are streamed layer by layer (16 x 1200 samples of the 32-wide MLP above;
# groups 2-4x larger measured 20-40% slower). On a GPU the memory budget alone decides.
VMAP_GROUP_BYTES = 16 * 2**20

# The per-point loop splits the samples into equal chunks whose activations (the estimate of
# _plan, x2 safety included) take at most this much, so that a layer's output is still in cache
# when the next layer reads it. Measured on this 2-core CPU: a 40->1024->1024->10 MLP on 3600
# samples ran 16% faster single-threaded in chunks of 900 than in one pass; the benchmark's
# 256-wide MLP (2 chunks of 1800) gained 1-3% with 2 threads, within noise. Chunks never go
# below LOOP_MIN_SAMPLES samples, where per-call overhead starts to show; and on a busy machine
# fewer, larger ops are safer (each multi-threaded op can wait for a descheduled thread).
LOOP_CACHE_BYTES = 12 * 2**20

# A per-point loop materialises points a few at a time: small enough to be reused from the
# allocator's heap (a fresh 100 MB block costs a page fault per 4 KiB on first touch, which
# profiling showed as ~40% of the per-point overhead), large enough to amortise each call.
_LOOP_ROW_BYTES = 8 * 2**20


# --------------------------------------------------------------------------- memory estimate


class _PeakTracker(TorchFunctionMode):
    """Track the peak bytes of live tensors created by torch calls (views not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if not isinstance(tensor, Tensor) or tensor._base is not None:
                continue
            key = tensor.untyped_storage().data_ptr()
            if key in self.live or key == 0:
                continue
            self.live[key] = tensor.untyped_storage().nbytes()
            self.current += self.live[key]
            self.peak = max(self.peak, self.current)
            weakref.finalize(tensor, self._release, key)
        return out


def activation_bytes_per_sample(forward: Callable[[], Any], n_samples: int) -> int:
    """Estimated bytes one sample costs in one forward pass, for chunking.

    Runs ``forward()`` (a pass on ``n_samples`` samples, under ``no_grad``) while recording every
    tensor that torch functions create and when it is freed; the peak of the live total, divided
    by ``n_samples`` and multiplied by :data:`ACTIVATION_SAFETY`, is the estimate. Under
    ``no_grad`` intermediates die as soon as the next layer has consumed them, so the peak is
    about the two largest adjacent activations, far below their sum for a deep network.
    """
    tracker = _PeakTracker()
    with torch.no_grad(), tracker:
        out = forward()
    del out
    return max(1, math.ceil(ACTIVATION_SAFETY * tracker.peak / max(1, n_samples)))


# --------------------------------------------------------------------------- the evaluator


@dataclass
class EvalInfo:
    """How the last evaluation ran (goes into a result's ``meta``)."""

    shortcut: bool = False
    shortcut_reason: str = ""
    strategy: str = ""
    sample_chunk: int = 0
    point_chunk: int = 0
    sample_blocks: int = 0
    bn_recomputed: bool = False
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_meta(self) -> dict[str, Any]:
        return {
            "shortcut": self.shortcut,
            "shortcut_reason": self.shortcut_reason,
            "strategy": self.strategy,
            "sample_chunk": self.sample_chunk,
            "point_chunk": self.point_chunk,
            "sample_blocks": self.sample_blocks,
            "bn_recomputed": self.bn_recomputed,
            "seconds": self.seconds,
            **self.extra,
        }


class SubspaceEvaluator:
    """Loss and accuracy of ``model`` at many points ``base + coefs @ terms`` on the data.

    Args:
        model: any ``nn.Module``; its parameters are never modified, its train/eval flags are
            restored afterwards.
        x, y: ``(N, *input)`` inputs (already on the target device and dtype), ``(N,)`` labels;
            or ``x`` a :class:`~lossatlas.data.batches.Batches` source (``y`` not given),
            read batch by batch on every evaluation, each batch moved to ``device``/``dtype``
            only while it is evaluated (so streamed data never has to fit in memory).
        space: the parameter space (default ``ParamSpace(model)``: the trainable parameters).
        device, dtype: where and in what precision to evaluate (default: ``x``'s).
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.
        bn_data: inputs to recompute BatchNorm statistics with at every point (see
            :func:`bn_batches`), or ``None`` to keep the module's statistics.
        memory_budget_mb: bound on the working memory of one chunk (points, activations and
            precomputed first-layer outputs), in MiB.
        strategy: forwarded to :func:`~lossatlas.evaluate.evaluate_points` (``auto`` picks
            a per-point loop on CPU for large sample chunks, ``vmap`` otherwise).
        shortcut: try the first-layer shortcut (falls back to plain evaluation when it does not
            apply).
        autocast: ``"bf16"`` or ``"fp16"``: forward passes under ``torch.autocast`` (see
            :func:`~lossatlas.evaluate.evaluate_points`); the shortcut's precomputed first-layer
            maps stay in ``dtype``. Each evaluation then re-evaluates up to
            :data:`AUTOCAST_CHECK_POINTS` of its points in full precision and reports the
            largest loss error in ``info`` (``autocast_max_abs_error``,
            ``autocast_max_rel_error``, ``autocast_checked_points``). Default ``None``: off.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor | Batches,
        y: Tensor | None = None,
        *,
        space: ParamSpace | None = None,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        loss_fn: LossFn | None = None,
        bn_data: Any = None,
        memory_budget_mb: float = 512,
        strategy: Strategy = "auto",
        shortcut: bool = True,
        autocast: Autocast = None,
    ) -> None:
        if memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
        self.model = model
        self.space = space or ParamSpace(model)
        self.source = x if isinstance(x, Batches) else Batches((x, y))
        # A small sample of the first batch, for shapes and memory estimates.
        first_batch = self.source.first()
        self.first_size = first_batch.size
        self.sample = first_batch.slice(0, 2)
        del first_batch
        self.device = device or self.sample.device
        first_input = self.sample.first_input()
        if dtype is None:
            if first_input is not None and first_input.is_floating_point():
                dtype = first_input.dtype
            else:
                dtype = next(model.parameters()).dtype
        self.dtype = dtype
        self.sample = self.sample.to(self.device, self.dtype)
        self.num_samples = 0  # counted by each evaluation
        self.loss_fn = loss_fn
        self.budget = int(memory_budget_mb * 2**20)
        self.strategy = strategy
        autocast_context(autocast, self.device)  # an unknown setting fails here
        self.autocast = autocast
        self.itemsize = torch.finfo(dtype).bits // 8
        # Buffers in the compute dtype, so a float64 evaluation of a float32 BatchNorm works.
        self.buffers = {
            name: buf.to(device=self.device, dtype=dtype if buf.is_floating_point() else None)
            for name, buf in model.named_buffers()
        }
        self.bn_batches = (
            None
            if bn_data is None
            else [
                b.to(device=self.device, dtype=dtype if b.is_floating_point() else None)
                for b in bn_batches(bn_data)
            ]
        )
        self.shortcut: InputLinearShortcut | None = None
        self.shortcut_reason = "disabled"
        if shortcut and not _plain_batches(self.sample, self.source.adapter):
            self.shortcut_reason = "batches are not (x, y) tensor pairs read by the default rules"
        elif shortcut and not self.space.spans_all:
            self.shortcut_reason = "only some parameters span the space"
        elif shortcut:
            self.shortcut, self.shortcut_reason = find_shortcut(model, self.space)
        self.stacked: StackedTail | None = None
        self.stacked_reason = "no first-layer shortcut"
        if self.shortcut is not None:
            self.stacked, self.stacked_reason = find_stacked_tail(self.shortcut)
            if self.stacked is not None and not _class_labels(self.sample.target, loss_fn):
                self.stacked, self.stacked_reason = None, "not the default loss on class labels"
        self.info = EvalInfo()
        self._act_cache: dict[tuple[bool, int, bool], int] = {}

    # ------------------------------------------------------------------ public

    def evaluate(self, base: Tensor | None, terms: Tensor, coefs: Tensor) -> tuple[Tensor, Tensor]:
        """Loss and accuracy ``(P,)`` at ``base + coefs @ terms``.

        Args:
            base: ``(D,)`` or ``None`` (pure linear combinations, e.g. simplex vertices).
            terms: ``(K, D)``.
            coefs: ``(P, K)`` coordinates of the points.
        """
        start = time.perf_counter()
        flags = {module: module.training for module in self.model.modules()}
        try:
            self.model.eval()
            loss, acc = self._evaluate(base, terms, coefs, self.autocast)
            if self.autocast is not None:
                self.info.extra.update(self._autocast_check(base, terms, coefs, loss))
        finally:
            for module, training in flags.items():
                module.training = training
        self.info.seconds = time.perf_counter() - start
        return loss, acc

    # ------------------------------------------------------------------ internals

    def _autocast_check(
        self, base: Tensor | None, terms: Tensor, coefs: Tensor, loss: Tensor
    ) -> dict[str, Any]:
        """The autocast loss error on a few of the points, against full precision."""
        info, n = self.info, self.num_samples
        picks = min(AUTOCAST_CHECK_POINTS, coefs.shape[0])
        index = torch.linspace(0, coefs.shape[0] - 1, picks).round().long().unique()
        index = index.to(coefs.device)
        exact, _ = self._evaluate(base, terms, coefs[index], None)
        self.info, self.num_samples = info, n  # the report is of the autocast evaluation
        error = precision_error(loss[index], exact)
        return {
            "autocast": self.autocast,
            "autocast_checked_points": int(index.numel()),
            **{f"autocast_{k}": v for k, v in error.items()},
        }

    def _points(self, base: Tensor | None, terms: Tensor, coefs: Tensor) -> Tensor:
        """``(P, D)`` points; one fused ``addmm`` when there is a base."""
        if base is None:
            return coefs @ terms
        return torch.addmm(base.unsqueeze(0), coefs, terms)

    def _evaluate(
        self, base: Tensor | None, terms: Tensor, coefs: Tensor, autocast: Autocast
    ) -> tuple[Tensor, Tensor]:
        n_points, n_coef = coefs.shape
        if terms.shape[0] != n_coef:
            raise ValueError(f"{n_coef} coordinates per point but {terms.shape[0]} directions")
        if n_coef == 0:  # a single point: a zero direction keeps every code path the same
            terms, coefs = terms.new_zeros(1, terms.shape[1]), coefs.new_zeros(n_points, 1)
            n_coef = 1
        info = EvalInfo(shortcut_reason=self.shortcut_reason)
        buffers = self.buffers
        batched = False
        if self.bn_batches is not None and norm_modules(self.model):
            buffers = self._recompute_bn(base, terms, coefs)
            info.bn_recomputed = batched = True

        # The plan is made on the first batch; each batch is then cut into blocks of samples.
        first = self.first_size
        shortcut = self.shortcut
        module: nn.Module
        if shortcut is not None:
            module, space = shortcut.stand_in(n_coef, base is not None)
            base_e, terms_e = shortcut.lift(base, terms, n_coef)
            buffers = map_buffers(shortcut, buffers)
            out_per_sample = self._first_layer_bytes(shortcut, base, terms)
            # The precomputed maps (plus one slab of cached partial sums, see TermStack) take
            # at most a quarter of the budget.
            terms_count = n_coef + (base is not None) + 1
            block = max(1, min(first, self.budget // 4 // max(1, terms_count * out_per_sample)))
        else:
            module, space, base_e, terms_e, block = self.model, self.space, base, terms, first
        info.shortcut = shortcut is not None
        strategy, sample_chunk, point_chunk, rows = self._plan(
            module, space, shortcut, base, terms, block, n_points
        )
        if (
            self.stacked is not None
            and self.strategy == "auto"
            and strategy == "vmap"
            and not info.bn_recomputed
            and autocast is None  # the stacked path runs in the points' own precision
        ):
            try:
                return self._evaluate_stacked(self.stacked, base, terms, coefs, info)
            except _NotStackable as why:  # e.g. negative labels in a later batch
                self.stacked, self.stacked_reason = None, str(why)
                info.sample_blocks = 0
        info.strategy, info.sample_chunk, info.point_chunk = strategy, sample_chunk, point_chunk
        if isinstance(module, TermStack) and module.sub_chunk:
            info.extra["sub_chunk"] = module.sub_chunk

        dtype, device = coefs.dtype, coefs.device
        total_loss = torch.zeros(n_points, dtype=dtype, device=device)
        total_acc = torch.zeros(n_points, dtype=dtype, device=device)
        calls = [slice(a, min(a + rows, n_points)) for a in range(0, n_points, rows)]
        # A per-point loop shares its points out over threads of one torch thread each, in
        # contiguous runs (a stand-in keeps partial sums along the grid's fastest axis), each
        # on a replica of the evaluated module. Each point's pass is then computed on one
        # thread whatever the core count. Measured on 2 cores, the 256-wide MLP on 3,600
        # samples: 1.3-1.7x a loop of passes on two torch threads.
        workers = thread_count(self.device, len(calls)) if strategy == "loop" else 1
        if workers > 1:
            info.extra["threads"] = workers
        replicas = [space] + [space.replica() for _ in range(workers - 1)]
        runs = [calls[share] for share in even_shares(len(calls), workers)]
        n = 0
        for piece in self.source.stream(self.device, self.dtype, block):
            count = piece.size
            n += count
            info.sample_blocks += 1
            if shortcut is not None:
                stack = shortcut.precompute(piece.args[0], base, terms)
                for replica in replicas:
                    assert isinstance(replica.model, TermStack)
                    replica.model.bind(stack)
                index = torch.arange(count, device=self.device)
                piece = Batch.read((index, piece.target), piece.adapter)

            def run(w: int, piece: Batch = piece, count: int = count) -> None:
                for sel in runs[w]:
                    thetas = self._points(base_e, terms_e, coefs[sel])
                    chunk_buffers = {k: v[sel] for k, v in buffers.items()} if batched else buffers
                    loss, acc = evaluate_points(
                        replicas[w],
                        thetas,
                        piece,
                        buffers=chunk_buffers,
                        buffers_batched=batched,
                        loss_fn=self.loss_fn,
                        sample_chunk=sample_chunk,
                        point_chunk=point_chunk,
                        strategy=strategy,
                        autocast=autocast,
                    )
                    # evaluate_points gives means over the block; weight blocks by size.
                    total_loss[sel] += loss * count
                    total_acc[sel] += acc * count

            try:
                on_threads(run, range(workers), workers)
            finally:
                for replica in replicas:
                    if isinstance(replica.model, TermStack):
                        replica.model.bind(None)
        self.info = info
        self.num_samples = n
        return total_loss / n, total_acc / n

    def _evaluate_stacked(
        self,
        stacked: StackedTail,
        base: Tensor | None,
        terms: Tensor,
        coefs: Tensor,
        info: EvalInfo,
    ) -> tuple[Tensor, Tensor]:
        """The stacked fast path (``_stacked``): blocks of points x samples, batched matmuls.

        Memory: the precomputed first-layer maps of a sample block take at most a quarter of
        the budget (as on the shortcut path), the points' tail parameters a quarter, and a
        block's activations (two live at a time, x ACTIVATION_SAFETY) at most half; within
        that, a block's activation is cache-sized (STACKED_BLOCK_BYTES).
        """
        shortcut = stacked.shortcut
        n_points, n_coef = coefs.shape
        has_base = base is not None
        out_per_sample = self._first_layer_bytes(shortcut, base, terms)
        terms_count = n_coef + has_base
        block = max(1, min(self.first_size, self.budget // 4 // (terms_count * out_per_sample)))
        samples = _equal_chunks(block, STACKED_SAMPLES)
        act = samples * stacked.widest * self.itemsize
        tail_bytes = max(1, shortcut.tail_index.numel() * self.itemsize)
        points = min(
            n_points,
            STACKED_BLOCK_BYTES // act,
            int(self.budget // 2 // (2 * ACTIVATION_SAFETY * act)),
            self.budget // 4 // tail_bytes,
        )
        # Blocks of points share out over threads of one torch thread each (every point is
        # then computed on one thread whatever the core count): at least one block a thread.
        workers = thread_count(self.device, n_points)
        points = max(1, min(points, math.ceil(n_points / workers)))
        if workers > 1:
            info.extra["threads"] = workers
        info.strategy, info.sample_chunk, info.point_chunk = "stacked", samples, points

        dtype, device = coefs.dtype, coefs.device
        total_loss = torch.zeros(n_points, dtype=dtype, device=device)
        total_hits = torch.zeros(n_points, dtype=dtype, device=device)
        n = 0
        for piece in self.source.stream(self.device, self.dtype, block):
            target = piece.target
            if target is None or not _class_labels(target, self.loss_fn):
                raise _NotStackable("a batch holds no class labels")
            if bool(target.lt(0).any()):
                raise _NotStackable("a batch holds labels the default loss ignores (negative)")
            maps = shortcut.precompute(piece.args[0], base, terms)  # (T, count, width)
            if maps.dim() != 3:
                raise _NotStackable("the first layer's output has more than one feature axis")
            width = maps.shape[2]
            classes = next(op for op in reversed(stacked.ops) if isinstance(op, Linear))
            labels = torch.arange(classes.weight.shape[0], device=self.device).unsqueeze(1)
            blocks = []
            for start in range(0, piece.size, samples):
                part = maps[:, start : start + samples]
                ys = target[start : start + samples].to(self.device)
                first = part.transpose(1, 2).reshape(part.shape[0], -1)  # features-first
                blocks.append((first, ys, labels < ys.unsqueeze(0)))
            del maps
            n += piece.size
            info.sample_blocks += 1

            def run(sel: slice, blocks: list = blocks, width: int = width) -> None:
                chunk = coefs[sel].to(self.dtype)
                params = stacked.tail_params(base, terms, chunk)
                for first, ys, before in blocks:
                    loss, hits = stacked.loss_hits(
                        first, width, chunk, params, has_base, ys, before
                    )
                    total_loss[sel] += loss.to(dtype)
                    total_hits[sel] += hits.to(dtype)

            chunks = [slice(lo, min(lo + points, n_points)) for lo in range(0, n_points, points)]
            on_threads(run, chunks, workers)
        self.info = info
        self.num_samples = n
        return total_loss / n, total_hits / n

    def _first_layer_bytes(
        self, shortcut: InputLinearShortcut, base: Tensor | None, terms: Tensor
    ) -> int:
        """Bytes of one sample's first-layer output (one term)."""
        row = terms[:1] if base is None else base.unsqueeze(0)
        out = shortcut.precompute(self.sample.args[0][:1], None, row)
        return out[0, 0].numel() * out.element_size()

    def _activation_bytes(
        self,
        module: nn.Module,
        space: ParamSpace,
        shortcut: InputLinearShortcut | None,
        base: Tensor | None,
        terms: Tensor,
    ) -> int:
        """Bytes per sample of one forward pass of the evaluated module (cached)."""
        key = (shortcut is not None, terms.shape[0], base is not None)
        if key not in self._act_cache:
            sample = self.sample
            n = sample.size
            coefs = terms.new_zeros(1, terms.shape[0])
            if shortcut is not None:
                base_e, terms_e = shortcut.lift(base, terms, terms.shape[0])
                theta = self._points(base_e, terms_e, coefs)[0]
                assert isinstance(module, TermStack)
                module.bind(shortcut.precompute(sample.args[0], base, terms))
                args: tuple[Any, ...] = (torch.arange(n, device=self.device),)
                kwargs: dict[str, Any] = {}
            else:
                theta = self._points(base, terms, coefs)[0]
                args, kwargs = sample.args, sample.kwargs
            buffers = self.buffers if shortcut is None else map_buffers(shortcut, self.buffers)
            try:
                self._act_cache[key] = activation_bytes_per_sample(
                    lambda: space.call(theta, args, kwargs, buffers), n
                )
            finally:
                if isinstance(module, TermStack):
                    module.bind(None)
        return self._act_cache[key]

    def _plan(
        self,
        module: nn.Module,
        space: ParamSpace,
        shortcut: InputLinearShortcut | None,
        base: Tensor | None,
        terms: Tensor,
        block: int,
        n_points: int,
    ) -> tuple[Strategy, int, int, int]:
        """``(strategy, sample_chunk, point_chunk, rows)`` within the memory budget.

        Estimate: a point costs ``D_eval * itemsize`` bytes as a materialised row, plus
        ``samples * act`` bytes of activations while it is evaluated, where ``act`` is
        :func:`activation_bytes_per_sample` of the evaluated module. Half of the budget goes to
        activations, a quarter to materialised points (``rows`` per :func:`evaluate_points`
        call), a quarter to the shortcut's precomputed maps. A per-point loop holds one point's
        activations at a time; ``vmap`` holds ``point_chunk`` points' at once.
        """
        act = self._activation_bytes(module, space, shortcut, base, terms)
        theta_bytes = space.dim * self.itemsize
        max_rows = max(1, min(n_points, self.budget // 4 // theta_bytes))
        largest = max(1, min(block, self.budget // 2 // act))  # the biggest pass that fits
        on_cpu = self.device.type == "cpu"
        strategy: Strategy = self.strategy
        if strategy == "auto":
            big = largest >= LOOP_MIN_SAMPLES and largest * act >= LOOP_MIN_PASS_BYTES
            strategy = "loop" if on_cpu and big else "vmap"
        row_cap = max(1, min(max_rows, _LOOP_ROW_BYTES // theta_bytes))
        if isinstance(module, TermStack):
            module.per_point = strategy == "loop"
            module.sub_chunk = None
        if strategy == "loop":
            loop_chunk = min(largest, max(LOOP_MIN_SAMPLES, LOOP_CACHE_BYTES // act))
            loop_chunk = _equal_chunks(block, loop_chunk)
            if isinstance(module, TermStack):  # the stand-in chunks internally: one call a point
                module.sub_chunk = loop_chunk
                return strategy, largest, 1, row_cap
            return strategy, loop_chunk, 1, row_cap
        sample_chunk = _equal_chunks(block, min(_VMAP_SAMPLE_CHUNK, largest))
        group = self.budget // 2 // (sample_chunk * act)
        if on_cpu:
            group = min(group, VMAP_GROUP_BYTES // (sample_chunk * act))
        point_chunk = max(1, min(max_rows, group))
        # Several groups per evaluate_points call amortise its setup; rows stay within the cap.
        rows = min(max_rows, max(point_chunk, row_cap // point_chunk * point_chunk))
        return strategy, sample_chunk, point_chunk, rows

    def _recompute_bn(self, base: Tensor | None, terms: Tensor, coefs: Tensor) -> dict[str, Tensor]:
        """Per-point buffers ``name -> (P, *shape)`` with freshly accumulated BN statistics."""
        assert self.bn_batches is not None
        n_points = coefs.shape[0]
        norms = norm_modules(self.model)
        stat_names = {
            f"{prefix}.{stat}"
            for prefix in norms
            for stat in ("running_mean", "running_var", "num_batches_tracked")
        }
        template = self.buffers
        out = {
            name: buf.new_empty((n_points, *buf.shape)) if name in stat_names else None
            for name, buf in template.items()
        }
        biggest = max(b.shape[0] for b in self.bn_batches)
        act = self._activation_bytes(self.model, self.space, None, base, terms)
        max_rows = max(1, min(n_points, self.budget // 4 // (self.space.dim * self.itemsize)))
        strategy = self.strategy
        if strategy == "auto":
            on_cpu = self.device.type == "cpu"
            strategy = "loop" if on_cpu and biggest >= LOOP_MIN_SAMPLES else "vmap"
        per_call = 1 if strategy == "loop" else max(1, self.budget // 2 // (biggest * act))
        rows = min(max_rows, per_call) if strategy == "vmap" else max_rows

        for first in range(0, n_points, rows):
            sel = slice(first, min(first + rows, n_points))
            thetas = self._points(base, terms, coefs[sel])
            fresh = recompute_bn_statistics(
                self.space, thetas, self.bn_batches, template, vectorise=strategy == "vmap"
            )
            for name in stat_names:
                target = out[name]
                assert target is not None
                target[sel] = fresh[name]
        full = {}
        for name, buf in template.items():
            target = out[name]
            full[name] = (
                target if target is not None else buf.unsqueeze(0).expand(n_points, *buf.shape)
            )
        return full


class _NotStackable(Exception):
    """Raised inside the stacked path when a batch turns out not to suit it."""


def _class_labels(target: Tensor | None, loss_fn: LossFn | None) -> bool:
    """Whether the default cross-entropy scores ``target``: 1-D integer class labels."""
    return (
        loss_fn is None
        and target is not None
        and target.dim() == 1
        and not target.is_floating_point()
        and not target.is_complex()
    )


def _plain_batches(sample: Batch, adapter: BatchAdapter) -> bool:
    """Whether batches are ``(x, y)`` tensor pairs that the first-layer shortcut can serve."""
    raw = sample.raw
    return (
        isinstance(raw, (tuple, list))
        and len(raw) == 2
        and all(isinstance(t, Tensor) for t in raw)
        and adapter.inputs is None
        and adapter.target is None
        and adapter.loss is None
        and adapter.size is None
    )


def _equal_chunks(total: int, most: int) -> int:
    """The size of the fewest equal chunks of ``total`` that are at most ``most`` each."""
    most = max(1, min(most, total))
    return math.ceil(total / math.ceil(total / most))
