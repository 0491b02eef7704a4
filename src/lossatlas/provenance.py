"""Which unit of work wrote which chunk and document of the store.

While a unit runs (:func:`recording`), every write the store makes is noted in a
:class:`WriteLog`: the chunks of each array (as boxes of chunk coordinates) and the metadata
documents it created or changed. The log goes into the unit's completion marker (``"writes"``),
together with the unit groups it ran inside itself (``"runs"``: a study step that fans its parts
out). So a damaged chunk or document can be traced back to the units that must run again
(:func:`owners`), and those to the steps that gathered them (:func:`enclosing`).

Markers written before this module existed hold no log; :func:`owners` then falls back on the
layout rules every stage follows (a part's arrays live under ``<group>/<unit id>/``, a step's
under the group whose single unit is ``result``, and otherwise the units of the nearest group
that has any own its arrays), which errs towards recomputing more, never less.

Markers also carry a CRC-32C of their own attributes (:func:`seal`, :func:`sealed_ok`): a
marker whose bytes changed but still parse is caught too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import google_crc32c

__all__ = [
    "Box",
    "Marker",
    "WriteLog",
    "chunk_box",
    "current_log",
    "enclosing",
    "owners",
    "recording",
    "seal",
    "sealed_ok",
]

Box = list[list[int]]
"""Chunk coordinates ``[[lo, hi), ...]`` per dimension: the chunks a write touched."""

CHECKSUM = "checksum"
_LOG: ContextVar[WriteLog | None] = ContextVar("lossatlas_write_log", default=None)


@dataclass
class WriteLog:
    """What one unit wrote: chunk boxes per array, documents, and unit groups it ran."""

    chunks: dict[str, list[Box]] = field(default_factory=dict)
    documents: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)

    def add_chunks(self, array: str, box: Box) -> None:
        """Note that ``box`` of ``array`` was written, coalesced with the boxes it adjoins.

        Coalescing keeps a marker small when a unit writes its rows one at a time in any order
        (a jump unit writes snapshot ``t`` of every member, then ``t + 1``, ...).
        """
        boxes = self.chunks.setdefault(array, [])
        box = [list(r) for r in box]
        merged = True
        while merged:
            merged = False
            for i, other in enumerate(boxes):
                if _merge(box, other):
                    del boxes[i]
                    merged = True
                    break
        boxes.append(box)

    def to_json(self) -> dict[str, Any]:
        """The marker's ``writes`` record."""
        return {"chunks": self.chunks, "documents": sorted(self.documents)}


def _merge(last: Box, box: Box) -> bool:
    """Extend ``last`` in place by ``box`` when the two together form one box."""
    if len(last) != len(box):
        return False
    differing = [d for d in range(len(box)) if last[d] != box[d]]
    if not differing:
        return True
    if len(differing) != 1:
        return False
    d = differing[0]
    (lo, hi), (blo, bhi) = last[d], box[d]
    if blo <= hi and bhi >= lo:  # adjacent or overlapping: one contiguous range
        last[d] = [min(lo, blo), max(hi, bhi)]
        return True
    return False


@contextlib.contextmanager
def recording() -> Iterator[WriteLog]:
    """Collect the store writes made inside the block (one unit's run) into a new log."""
    log = WriteLog()
    token = _LOG.set(log)
    try:
        yield log
    finally:
        _LOG.reset(token)


def current_log() -> WriteLog | None:
    """The log of the unit running now in this thread, if any."""
    return _LOG.get()


def chunk_box(region: Any, shape: Sequence[int], chunks: Sequence[int]) -> Box:
    """The chunks that writing ``region`` (ints, slices, ``...`` or ``None``) of an array touches.

    Anything else (fancy indices) counts as the whole array: more is safe, less is not.
    """
    whole = [[0, -(-int(n) // int(c)) if c else 0] for n, c in zip(shape, chunks, strict=True)]
    if region is None or region is Ellipsis:
        return whole
    items = region if isinstance(region, tuple) else (region,)
    if any(item is Ellipsis for item in items):
        return whole
    box = [list(r) for r in whole]
    for axis, item in enumerate(items[: len(shape)]):
        size, chunk = int(shape[axis]), int(chunks[axis])
        if isinstance(item, (int,)) or hasattr(item, "__index__"):
            try:
                index = int(item)
            except TypeError:
                return whole
            index = index + size if index < 0 else index
            box[axis] = [index // chunk, index // chunk + 1]
        elif isinstance(item, slice):
            start, stop, _ = item.indices(size)
            if stop <= start:
                return [[0, 0] for _ in shape]
            box[axis] = [start // chunk, (stop - 1) // chunk + 1]
        else:
            return whole
    return box


def _inside(coords: Sequence[int], box: Box) -> bool:
    return len(coords) == len(box) and all(
        lo <= c < hi for c, (lo, hi) in zip(coords, box, strict=True)
    )


# --------------------------------------------------------------------------- marker seals


def _digest(attributes: dict[str, Any]) -> str:
    body = {k: v for k, v in attributes.items() if k != CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return f"{google_crc32c.value(text.encode()):08x}"


def seal(attributes: dict[str, Any]) -> dict[str, Any]:
    """``attributes`` with the CRC-32C of everything else in them under ``"checksum"``."""
    return {**attributes, CHECKSUM: _digest(attributes)}


def sealed_ok(attributes: dict[str, Any]) -> bool:
    """Whether a marker's checksum matches (markers from before checksums pass)."""
    recorded = attributes.get(CHECKSUM)
    return recorded is None or recorded == _digest(attributes)


# --------------------------------------------------------------------------- tracing back


@dataclass(frozen=True)
class Marker:
    """One completion marker: the unit ``unit`` of group ``group`` and its attributes."""

    group: str
    unit: str
    attrs: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        """``(group, unit)``: how a unit is named everywhere."""
        return (self.group, self.unit)

    @property
    def logged(self) -> bool:
        """Whether the marker records what its unit wrote."""
        return isinstance(self.attrs.get("writes"), dict)


def _ancestors(path: str) -> list[str]:
    """``"a/b/c"`` -> ``["a/b", "a", ""]``: the groups above a node, deepest first."""
    parts = path.split("/") if path else []
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]


def owners(
    node: str,
    markers: Iterable[Marker],
    *,
    chunk: Sequence[int] | None = None,
    unit_groups: Iterable[str] = (),
) -> set[tuple[str, str]]:
    """The units whose re-run rewrites chunk ``chunk`` of array ``node`` (or document ``node``).

    ``chunk=None`` asks about the node's metadata document, which a repair rewrites whole: for
    an array that means every unit that wrote any of its chunks, too. ``unit_groups`` are the
    groups that have a ``_units`` folder (even with no complete marker left), for the fallback.
    """
    markers = list(markers)
    found: set[tuple[str, str]] = set()
    for marker in markers:
        writes = marker.attrs.get("writes")
        if not isinstance(writes, dict):
            continue
        if chunk is None and node in (writes.get("documents") or []):
            found.add(marker.key)
        boxes = (writes.get("chunks") or {}).get(node) or []
        if any(chunk is None or _inside(chunk, box) for box in boxes):
            found.add(marker.key)
    if found:
        return found
    return _by_layout(node, markers, set(unit_groups), document=chunk is None)


def _by_layout(
    node: str, markers: list[Marker], unit_groups: set[str], *, document: bool
) -> set[tuple[str, str]]:
    """The fallback for nodes no marker logged: the layout rules of the module docstring.

    Only groups whose markers hold no log are guessed at: a logged group's units said exactly
    what they wrote, so a node none of them wrote belongs to the driver (rewritten on re-run).
    """
    by_group: dict[str, list[Marker]] = {}
    for marker in markers:
        by_group.setdefault(marker.group, []).append(marker)
    unit_groups |= set(by_group)
    # A group's own document belongs to its own units first (a step's attributes, its result).
    for group in ([node] if document else []) + _ancestors(node):
        if group not in unit_groups:
            continue
        present = by_group.get(group, [])
        if any(m.logged for m in present):
            return set()
        below = node[len(group) :].lstrip("/") if group else node
        first = below.split("/", 1)[0]
        named = [m for m in present if m.unit == first]
        if named:
            return {m.key for m in named}
        return {m.key for m in present}
    return set()


def enclosing(units: Iterable[tuple[str, str]], markers: Iterable[Marker]) -> set[tuple[str, str]]:
    """``units`` plus, transitively, the units that ran their groups inside themselves.

    A step that gathered its parts is complete only while they are: invalidating a part must
    invalidate the step, or a re-run would skip the step and never rerun the part. Markers
    without a ``runs`` record fall back on nesting: a ``result`` unit of a group above.
    """
    markers = list(markers)
    result = set(units)
    frontier = list(result)
    while frontier:
        group, _ = frontier.pop()
        for marker in markers:
            runs = marker.attrs.get("runs")
            if isinstance(runs, list):
                inside = group in runs
            else:
                inside = marker.unit == "result" and group.startswith(f"{marker.group}/")
            if inside and marker.key not in result:
                result.add(marker.key)
                frontier.append(marker.key)
    return result
