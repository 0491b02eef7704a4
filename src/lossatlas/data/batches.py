"""One batch interface for every probe: how a batch is read, how the model is called, the loss.

A *batch* is whatever the user's data yields: an ``(x, y)`` pair, a dict in HuggingFace style
(``{"input_ids": ..., "attention_mask": ..., "labels": ...}``), a tuple of several inputs and a
target, or anything else a :class:`BatchAdapter` is told how to read. The adapter splits it
into the forward's positional and keyword arguments and a target, picks the logits out of the
model's output, and computes the loss and (optionally) the accuracy of one batch.

Default rules (no adapter needed):

* ``(x, y)`` tuple or list -> ``model(x)``, target ``y``.
* A mapping -> ``model(**others)``, target ``batch["labels"]`` (HuggingFace's convention).
* Output: a tensor is the logits; a mapping with a ``"logits"`` key or an object with a
  ``logits`` attribute (a ``transformers`` ``ModelOutput``) gives that.
* Loss: ``loss_fn(logits, target)`` (cross-entropy by default), a scalar mean over the batch.
* Accuracy: ``argmax(logits, -1) == target`` when the target holds integer class labels with
  one dimension less than the logits; otherwise there is none (regression).

:class:`Batches` is the re-iterable source the probes read: it yields :class:`Batch` objects
one at a time (a ``DataLoader`` is streamed, never read whole), each moved to the compute
device and dtype only when it is used. Every probe's mean over the data is the exact weighted
sum ``sum_b n_b mean_b / sum_b n_b``, so a streamed data set gives the in-memory numbers.

Everything here runs inside ``torch.func.vmap`` over per-point parameters: the adapter's
callables see one point's outputs (the ``vmap`` dimension is hidden).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from lossatlas.errors import LossAtlasError

__all__ = [
    "DEFAULT_ADAPTER",
    "Batch",
    "BatchAdapter",
    "BatchError",
    "Batches",
    "LossShapeError",
    "OutputError",
    "as_batches",
    "resolve_adapter",
]


class BatchError(LossAtlasError, TypeError):
    """Data or a batch that the adapter cannot read (wrong structure, no target, sizes that
    disagree)."""


class OutputError(LossAtlasError):
    """A model output from which no logits can be taken."""


class LossShapeError(LossAtlasError):
    """A loss that does not return one scalar (the mean over the batch)."""


def _default_logits(outputs: Any) -> Tensor:
    """The logits of a model output: a tensor, ``out["logits"]`` or ``out.logits``."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    kind = type(outputs).__name__
    keys = f" (keys: {', '.join(map(str, outputs))})" if isinstance(outputs, Mapping) else ""
    raise OutputError(
        f"the model returned a {kind}{keys}, expected a tensor of logits, a dict with a "
        "'logits' key or an object with a .logits attribute; pass "
        "BatchAdapter(logits=lambda out: ...) to say where the logits are"
    )


@dataclass(frozen=True)
class BatchAdapter:
    """How to read a batch, call the model, and score its output.

    Every field is optional; ``BatchAdapter()`` is the default rules of the module docstring.

    Args:
        inputs: ``inputs(batch)`` -> the forward's arguments: a tuple (positional), a mapping
            (keyword) or one tensor. Default: ``x`` of ``(x, y)``, or a mapping's keys other
            than ``labels``.
        target: ``target(batch)`` -> the target tensor ``(n, ...)``, or ``None`` when the loss
            needs none. Default: ``y`` of ``(x, y)``, or ``batch["labels"]``.
        logits: ``logits(outputs)`` -> ``(n, C)`` (or ``(n, ...)``) logits of one point's
            output. Default: a tensor itself, ``out["logits"]`` or ``out.logits``.
        loss: ``loss(outputs, batch)`` -> scalar mean loss of the batch, given the raw output
            and the batch as the data yields it (moved to the device). Overrides ``loss_fn``.
        loss_fn: ``loss_fn(logits, target)`` -> scalar mean; cross-entropy by default.
        accuracy: ``"auto"`` (argmax accuracy for integer class targets, none otherwise),
            ``None`` (none), or ``metric(logits, target)`` -> the batch's mean score.
        size: ``size(batch)`` -> number of samples. Default: the target's length, else the
            first tensor's.
    """

    inputs: Callable[[Any], Any] | None = None
    target: Callable[[Any], Tensor | None] | None = None
    logits: Callable[[Any], Tensor] | None = None
    loss: Callable[[Any, Any], Tensor] | None = None
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None
    accuracy: Callable[[Tensor, Tensor], Tensor] | str | None = "auto"
    size: Callable[[Any], int] | None = None

    @property
    def is_default(self) -> bool:
        """Whether every rule is the default (so tensors ``(x, y)`` take the fast paths)."""
        return self == DEFAULT_ADAPTER

    # ------------------------------------------------------------------ reading a batch

    def split(self, batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Tensor | None]:
        """``(args, kwargs, target)`` of one batch."""
        args: tuple[Any, ...]
        kwargs: dict[str, Any]
        if self.inputs is not None:
            raw = self.inputs(batch)
            if isinstance(raw, Mapping):
                args, kwargs = (), dict(raw)
            elif isinstance(raw, tuple):
                args, kwargs = raw, {}
            else:
                args, kwargs = (raw,), {}
        elif isinstance(batch, Mapping):
            args, kwargs = (), {k: v for k, v in batch.items() if k != "labels"}
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            args, kwargs = (batch[0],), {}
        elif isinstance(batch, Tensor) and self.target is not None:
            args, kwargs = (batch,), {}
        else:
            raise BatchError(self._unreadable(batch))
        if self.target is not None:
            target = self.target(batch)
        elif isinstance(batch, Mapping):
            if "labels" not in batch and self.loss is None:
                raise BatchError(
                    f"a dict batch needs a 'labels' key (got keys {', '.join(map(str, batch))}); "
                    "pass BatchAdapter(target=lambda b: b['your_key'])"
                )
            target = batch.get("labels")
        elif isinstance(batch, (tuple, list)) and len(batch) == 2 and self.inputs is None:
            target = batch[1]
        else:
            target = None
        if target is not None and not isinstance(target, Tensor):
            target = torch.as_tensor(target)
        return tuple(args), kwargs, target

    def _unreadable(self, batch: Any) -> str:
        if isinstance(batch, (tuple, list)):
            what = f"a {type(batch).__name__} of {len(batch)} items"
        else:
            what = f"a {type(batch).__name__}"
        return (
            f"cannot read a batch that is {what}: expected (x, y), a dict with 'labels', or "
            "BatchAdapter(inputs=lambda b: (b[0], b[1]), target=lambda b: b[2]) for anything else"
        )

    def batch_size(self, batch: Any, target: Tensor | None) -> int:
        """Number of samples in ``batch``."""
        if self.size is not None:
            return int(self.size(batch))
        if target is not None and target.dim() > 0:
            return int(target.shape[0])
        leaves = [t for t in tree_flatten(batch)[0] if isinstance(t, Tensor) and t.dim() > 0]
        if not leaves:
            raise BatchError("a batch holds no tensor with a sample dimension")
        return int(leaves[0].shape[0])

    # ------------------------------------------------------------------ scoring an output

    def get_logits(self, outputs: Any) -> Tensor:
        """The logits of one point's ``outputs``."""
        logits = (self.logits or _default_logits)(outputs)
        if not isinstance(logits, Tensor):
            raise OutputError(
                f"the logits rule returned a {type(logits).__name__}, expected a tensor"
            )
        return logits

    def scores_accuracy(self, target: Tensor | None) -> bool:
        """Whether an accuracy is computed for batches with this ``target``."""
        if self.accuracy is None or target is None:
            return False
        if callable(self.accuracy):
            return True
        if self.accuracy != "auto":
            raise ValueError(f"accuracy must be 'auto', None or a callable, got {self.accuracy!r}")
        return not (target.is_floating_point() or target.is_complex())

    def batch_loss(self, outputs: Any, batch: Batch) -> Tensor:
        """Scalar mean loss of one batch at one point (checked to be a scalar)."""
        if self.loss is not None:
            loss = self.loss(outputs, batch.raw)
            what = "loss(outputs, batch)"
        else:
            if batch.target is None:
                raise BatchError(
                    "the batch has no target; give one (BatchAdapter(target=...)) or a "
                    "BatchAdapter(loss=lambda outputs, batch: ...) that needs none"
                )
            logits = self.get_logits(outputs)
            what = "loss_fn(logits, target)"
            try:
                loss = (self.loss_fn or F.cross_entropy)(logits, batch.target)
            except (RuntimeError, ValueError, AssertionError, IndexError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise LossShapeError(
                    f"{what} failed on logits of shape {tuple(logits.shape)} and a target of "
                    f"shape {tuple(batch.target.shape)} ({batch.target.dtype}): {first}; "
                    "expected logits (n, C) with class labels (n,) for the default "
                    "cross-entropy, or pass a loss_fn that fits"
                ) from err
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise LossShapeError(
                f"{what} returned shape {shape}, expected a scalar (the mean over the batch); "
                "use reduction='mean'"
            )
        return loss

    def batch_hits(self, outputs: Any, batch: Batch) -> Tensor:
        """Sum of the accuracy over the batch's samples (mean score x n) at one point."""
        target = batch.target
        assert target is not None
        logits = self.get_logits(outputs)
        if callable(self.accuracy):
            return self.accuracy(logits, target) * batch.size
        if logits.shape[:-1] != target.shape:
            raise OutputError(
                f"logits of shape {tuple(logits.shape)} do not fit class labels of shape "
                f"{tuple(target.shape)} (expected logits (..., C) over them); pass "
                "BatchAdapter(accuracy=None) for no accuracy or a metric of your own"
            )
        return (logits.argmax(dim=-1) == target).sum()

    def stats(self, outputs: Any, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(loss x n, accuracy x n)`` of one batch at one point (accuracy 0 when none)."""
        loss = self.batch_loss(outputs, batch) * batch.size
        if batch.scored:
            return loss, self.batch_hits(outputs, batch).to(loss.dtype)
        return loss, torch.zeros((), dtype=loss.dtype, device=loss.device)


DEFAULT_ADAPTER = BatchAdapter()


@dataclass(frozen=True, eq=False)
class Batch:
    """One batch, read: the forward's ``args`` and ``kwargs``, its ``target`` and ``size``.

    ``raw`` is the batch as the data yields it (after :meth:`to`), for ``loss(outputs, batch)``.
    ``scored`` says whether an accuracy is computed on it.
    """

    raw: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    target: Tensor | None
    size: int
    adapter: BatchAdapter
    scored: bool

    @classmethod
    def read(cls, raw: Any, adapter: BatchAdapter) -> Batch:
        args, kwargs, target = adapter.split(raw)
        size = adapter.batch_size(raw, target)
        if target is not None and target.dim() > 0 and target.shape[0] != size:
            raise BatchError(f"the target has {target.shape[0]} samples, the batch {size}")
        if (
            adapter.inputs is None
            and adapter.size is None
            and isinstance(raw, (tuple, list))
            and isinstance(args[0], Tensor)
            and args[0].dim() > 0
            and args[0].shape[0] != size
        ):
            raise BatchError(f"x has {args[0].shape[0]} samples but y has {size}")
        return cls(raw, args, kwargs, target, size, adapter, adapter.scores_accuracy(target))

    @property
    def reads_pairs(self) -> bool:
        """Whether the batch is ``(x, y)`` tensors that its adapter reads by the default rules
        (a ``loss_fn(logits, y)`` may be set): the fast paths that index ``x`` and ``y``
        directly (the stacked engine, ``augment``, the path fitters' shared batches) need it."""
        ad, raw = self.adapter, self.raw
        return (
            isinstance(raw, (tuple, list))
            and len(raw) == 2
            and all(isinstance(t, Tensor) for t in raw)
            and (ad.inputs, ad.target, ad.logits, ad.loss, ad.size) == (None,) * 5
        )

    @property
    def is_plain(self) -> bool:
        """One tensor input, an integer or float tensor target, default adapter rules."""
        return (
            len(self.args) == 1
            and isinstance(self.args[0], Tensor)
            and not self.kwargs
            and self.adapter.is_default
        )

    def slice(self, start: int, stop: int) -> Batch:
        """Samples ``start:stop``: every tensor whose first dimension is the batch's is cut."""
        if start == 0 and stop >= self.size:
            return self
        n = self.size

        def cut(t: Any) -> Any:
            return t[start:stop] if _is_sample_tensor(t, n) else t

        return Batch.read(tree_map(cut, self.raw), self.adapter)

    def rows(self, index: Tensor) -> Any:
        """The raw batch at sample ``index`` (K, B): every sample tensor ``(n, *rest)`` becomes
        ``(K, B, *rest)`` (row ``k`` holds samples ``index[k]``); other leaves stay as they are.

        This is how a population draws each member's batch from its own data order; the result
        is read by :func:`torch.func.vmap` over members with :meth:`member_dims` as ``in_dims``.
        """
        n, flat = self.size, index.reshape(-1)

        def take(t: Any) -> Any:
            if not _is_sample_tensor(t, n):
                return t
            return t.index_select(0, flat.to(t.device)).view(*index.shape, *t.shape[1:])

        return tree_map(take, _plain_containers(self.raw))

    def member_dims(self) -> Any:
        """``in_dims`` for :meth:`rows`' result: 0 for a sample tensor, ``None`` otherwise."""
        n = self.size
        raw = _plain_containers(self.raw)
        return tree_map(lambda t: 0 if _is_sample_tensor(t, n) else None, raw)

    @property
    def input_dtype(self) -> torch.dtype | None:
        """The dtype of the first floating-point input tensor (``None`` when there is none)."""
        for t in tree_flatten((self.args, self.kwargs))[0]:
            if isinstance(t, Tensor) and t.is_floating_point():
                return t.dtype
        return None

    def chunks(self, step: int) -> Iterator[Batch]:
        """Consecutive slices of at most ``step`` samples."""
        for start in range(0, self.size, max(1, step)):
            yield self.slice(start, start + step)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Batch:
        """The batch on ``device``; floating tensors in ``dtype`` (when given)."""

        def move(t: Any) -> Any:
            if not isinstance(t, Tensor):
                return t
            cast = dtype if dtype is not None and t.is_floating_point() else None
            if t.device == torch.device(device) and (cast is None or t.dtype == cast):
                return t
            return t.to(device=device, dtype=cast)

        return Batch.read(tree_map(move, self.raw), self.adapter)

    @property
    def device(self) -> torch.device:
        """The device of the batch's first input tensor (CPU when it has none)."""
        for t in tree_flatten((self.args, self.kwargs))[0]:
            if isinstance(t, Tensor):
                return t.device
        return torch.device("cpu")

    def first_input(self) -> Tensor | None:
        """The single positional tensor input of a plain batch, else ``None``."""
        return self.args[0] if self.is_plain else None


class Batches:
    """A re-iterable source of :class:`Batch` objects: how every probe reads ``data``.

    Args:
        data: ``(X, y)`` tensors, a ``DataLoader`` (or any re-iterable: a list of batches, an
            ``IterableDataset``) of batches, or a lossatlas ``Dataset`` (see ``split``).
        adapter: how to read the batches (default rules when ``None``).
        split: which split of a ``Dataset`` (``"train"``, ``"val"``, ``"test"``).
        chunk: largest batch handed out; bigger ones (in-memory tensors included) are cut.

    ``(X, y)`` tensors stay in memory and are handed out as views, so they cost nothing; any
    other source is iterated afresh on every pass (each probe makes one or more passes), one
    batch at a time. A one-shot iterator (a generator) cannot be read twice and is refused.
    """

    def __init__(
        self,
        data: Any,
        adapter: BatchAdapter | None = None,
        *,
        split: str = "train",
        chunk: int | None = None,
    ) -> None:
        self.adapter = adapter or DEFAULT_ADAPTER
        self.split = split
        self.chunk = chunk
        self._memory: Batch | None = None
        self._source: Iterable[Any] | None = None
        if _is_dataset(data):
            self._memory = Batch.read(_dataset_split(data, split), self.adapter)
        elif isinstance(data, (tuple, list)) and _is_tensor_batch(data):
            if split != "train":
                raise ValueError(f"no split '{split}' in the data (available: train)")
            pair = tuple(torch.as_tensor(t) for t in data)
            self._memory = Batch.read(pair, self.adapter)
        elif isinstance(data, Mapping) and _all_tensors(data.values()):
            if split != "train":
                raise ValueError(f"no split '{split}' in the data (available: train)")
            self._memory = Batch.read(dict(data), self.adapter)
        elif isinstance(data, Iterator):
            raise BatchError(
                "data is a one-shot iterator (e.g. a generator); probes read the data several "
                "times: pass a DataLoader, a list of batches or an IterableDataset"
            )
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Tensor)):
            if split != "train":
                raise ValueError(f"no split '{split}' in the data (available: train)")
            self._source = data
        else:
            raise BatchError(
                f"data must be (X, y) tensors, a DataLoader or iterable of batches, or a "
                f"lossatlas Dataset; got a {type(data).__name__}"
            )

    @property
    def in_memory(self) -> bool:
        """Whether all samples are one batch of tensors held in memory."""
        return self._memory is not None

    @property
    def memory_batch(self) -> Batch:
        """The whole in-memory batch (only when :attr:`in_memory`)."""
        assert self._memory is not None
        return self._memory

    def __iter__(self) -> Iterator[Batch]:
        if self._memory is not None:
            if self._memory.size == 0:
                raise BatchError("data has no samples")
            yield from self._memory.chunks(self.chunk or self._memory.size)
            return
        assert self._source is not None
        seen = False
        for raw in self._source:
            batch = Batch.read(raw, self.adapter)
            if batch.size == 0:
                continue
            seen = True
            yield from batch.chunks(self.chunk or batch.size) if self.chunk else (batch,)
        if not seen:
            raise BatchError("data has no samples")

    def stream(
        self, device: torch.device, dtype: torch.dtype | None, step: int | None = None
    ) -> Iterator[Batch]:
        """Every batch moved to ``device`` (floating tensors in ``dtype``), cut to ``step``."""
        for batch in self:
            for piece in batch.chunks(step) if step else (batch,):
                yield piece.to(device, dtype)

    def gather(self) -> Batch:
        """All samples as one in-memory :class:`Batch` (streamed batches are concatenated).

        For consumers that need random access to every sample, such as a population whose
        members each draw their own data order; probes stream instead. Every streamed batch
        must have the structure of the first; tensors with a sample dimension are
        concatenated, every other leaf must be the same in all of them.
        """
        if self._memory is not None:
            if self._memory.size == 0:
                raise BatchError("data has no samples")
            return self._memory
        pieces = list(self)
        if len(pieces) == 1:
            return pieces[0]
        return Batch.read(_concat([b.raw for b in pieces], [b.size for b in pieces]), self.adapter)

    def first(self) -> Batch:
        """The first batch (for shapes and dtypes)."""
        return next(iter(self))

    def num_samples(self) -> int:
        """Total samples (a pass over streamed data, reading every batch)."""
        if self._memory is not None:
            return self._memory.size
        return sum(b.size for b in self)


def resolve_adapter(
    adapter: BatchAdapter | None, loss_fn: Callable[[Tensor, Tensor], Tensor] | None
) -> BatchAdapter:
    """``adapter`` (default rules when ``None``) with ``loss_fn`` filled in when it sets none.

    A probe's ``loss_fn=`` argument is the ``(logits, target) -> mean`` loss; an adapter's own
    ``loss`` or ``loss_fn`` takes precedence over it.
    """
    base = adapter or DEFAULT_ADAPTER
    if loss_fn is None or base.loss is not None or base.loss_fn is not None:
        return base
    return replace(base, loss_fn=loss_fn)


def as_batches(data: Any, adapter: BatchAdapter | None = None, *, split: str = "train") -> Batches:
    """``data`` as :class:`Batches` (returned as is when it already is, with no new adapter)."""
    if isinstance(data, Batches):
        if adapter is not None and adapter != data.adapter:
            raise ValueError("data is already Batches with another adapter")
        return data
    return Batches(data, adapter, split=split)


def _is_sample_tensor(t: Any, n: int) -> bool:
    """Whether ``t`` is a tensor with a leading sample dimension of size ``n``."""
    return isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == n


def _plain_containers(raw: Any) -> Any:
    """``raw`` with mappings (e.g. a ``BatchEncoding``) as plain dicts, so pytrees see inside."""
    if isinstance(raw, Mapping) and not isinstance(raw, dict):
        return {k: _plain_containers(v) for k, v in raw.items()}
    return raw


def _concat(raws: Sequence[Any], sizes: Sequence[int]) -> Any:
    """One raw batch of the raw batches ``raws`` (of ``sizes`` samples each), concatenated."""
    flat, spec = tree_flatten(_plain_containers(raws[0]))
    columns: list[list[Any]] = [[leaf] for leaf in flat]
    for raw in raws[1:]:
        leaves, other = tree_flatten(_plain_containers(raw))
        if other != spec:
            raise BatchError(
                "the data's batches differ in structure; every batch must hold the same "
                "keys or items as the first"
            )
        for column, leaf in zip(columns, leaves, strict=True):
            column.append(leaf)
    out = []
    for column in columns:
        if all(_is_sample_tensor(t, n) for t, n in zip(column, sizes, strict=True)):
            out.append(torch.cat(column))
        elif all(_same_leaf(column[0], leaf) for leaf in column[1:]):
            out.append(column[0])
        else:
            raise BatchError(
                "a batch entry that is not a per-sample tensor differs between batches; "
                "it cannot be concatenated"
            )
    return tree_unflatten(out, spec)


def _same_leaf(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    return not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b


def _all_tensors(items: Iterable[Any]) -> bool:
    items = list(items)
    return bool(items) and all(isinstance(t, Tensor) for t in items)


def _is_tensor_batch(data: Sequence[Any]) -> bool:
    """An in-memory batch: a tuple of tensors (or arrays), e.g. ``(X, y)``."""
    return (
        len(data) >= 1
        and all(isinstance(t, Tensor) or hasattr(t, "__array__") for t in data)
        and not any(isinstance(t, (tuple, list, Mapping)) for t in data)
    )


def _is_dataset(data: Any) -> bool:
    """A lossatlas :class:`~lossatlas.data.Dataset`, or anything shaped like one."""
    return hasattr(data, "x_train") and hasattr(data, "split")


def _dataset_split(data: Any, split: str) -> tuple[Tensor, Tensor]:
    """One split of a lossatlas ``Dataset`` (only that split is read)."""
    x_val = getattr(data, "x_val", None)
    names = ["train", "test"] + (["val"] if x_val is not None and x_val.shape[0] > 0 else [])
    if split not in names:
        raise ValueError(f"no split '{split}' in the data (available: {', '.join(names)})")
    return data.split(split)
