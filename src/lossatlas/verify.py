"""``lossatlas verify OUT [--repair]``: check every chunk, marker and document of a store.

:func:`verify_store` reads the whole store without taking the driver lock and reports:

* **chunks** whose CRC-32C fails (arrays written before checksums are decoded instead);
* **markers** that do not parse, are not complete or fail their own checksum;
* **metadata documents** (``zarr.json``) that do not parse as zarr v3 groups or arrays, and
  group or array documents that are missing under nodes that exist.

Each finding is traced back to the units of work that wrote it (:mod:`lossatlas.provenance`),
and those to the steps that gathered them. :func:`repair_store` then makes exactly those units
incomplete: it deletes their markers, deletes damaged chunks and arrays whose documents are
damaged (their units rewrite them), and rewrites damaged group documents empty (their
attributes come back when the driver or their units run again). Re-running the command that
wrote the store recomputes those units and nothing else, to the same numbers.

The root document holds the store's config; if it is damaged the store cannot be trusted, and
opening it already fails with one line saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zarr.core.metadata import ArrayV3Metadata

from lossatlas.chunks import checksum_ok, chunk_coords, has_checksum
from lossatlas.provenance import Marker, enclosing, owners, sealed_ok
from lossatlas.store import AtlasStore

__all__ = ["Finding", "RepairResult", "VerifyReport", "repair_store", "verify_store"]

_META = "zarr.json"
_UNITS = "_units"
_EMPTY_GROUP = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()

Unit = tuple[str, str]  # (group, unit id)


@dataclass(frozen=True)
class Finding:
    """One damaged object of the store and the units whose re-run rewrites it."""

    kind: Literal["chunk", "marker", "document"]
    key: str  # the store key (a chunk, a zarr.json)
    node: str  # the array or group it belongs to ("" for the root)
    problem: str
    units: frozenset[Unit] = frozenset()
    node_kind: Literal["array", "group", "marker"] = "array"

    def line(self) -> str:
        """``chunk train/params/c/1/0: fails its checksum -> unit members-0001-0001 of train``."""
        who = _units_text(self.units) if self.units else "no unit (the driver rewrites it)"
        return f"{self.kind} {self.key}: {self.problem} -> {who}"


@dataclass
class VerifyReport:
    """What :func:`verify_store` checked and found."""

    path: str
    chunks: int = 0
    decoded: int = 0  # chunks of arrays without checksums, checked by decoding
    markers: int = 0
    documents: int = 0
    findings: list[Finding] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)  # to recompute, enclosing steps included
    unowned: list[Finding] = field(default_factory=list)  # damaged data no unit rewrites

    @property
    def ok(self) -> bool:
        """Whether nothing is damaged."""
        return not self.findings

    def lines(self) -> list[str]:
        """The report as lines of text, for the CLI."""
        decoded = f" ({self.decoded} decoded: written before checksums)" if self.decoded else ""
        lines = [
            f"{self.path}: {self.chunks} chunks{decoded}, {self.markers} markers, "
            f"{self.documents} documents checked"
        ]
        if self.ok:
            return [*lines, "no damage found"]
        lines.append(f"damaged: {len(self.findings)}")
        lines.extend(f"  {finding.line()}" for finding in self.findings)
        lines.append(f"units to recompute ({len(self.units)}): {_units_text(self.units)}")
        for finding in self.unowned:
            lines.append(f"  cannot be recomputed: {finding.key} (no unit on record wrote it)")
        return lines


@dataclass(frozen=True)
class RepairResult:
    """What :func:`repair_store` changed."""

    invalidated: list[Unit]
    deleted: list[str]
    rewritten: list[str]


def _units_text(units: Iterable[Unit]) -> str:
    by_group: dict[str, list[str]] = {}
    for group, unit in sorted(units):
        by_group.setdefault(group or "/", []).append(unit)
    return "; ".join(f"{group}: {', '.join(ids)}" for group, ids in by_group.items()) or "none"


# --------------------------------------------------------------------------- checking

_CHUNK_KEY = re.compile(r"^(.*)/c(/\d+)*$")  # "a/b/c/0/1" is a chunk of array "a/b"


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _name(path: str) -> str:
    return path.rpartition("/")[2]


def _ancestors(path: str) -> list[str]:
    """The groups above ``path``, deepest first (the root ``""`` last)."""
    parts = path.split("/") if path else []
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]


def _is_marker(node: str) -> bool:
    return _name(_parent(node)) == _UNITS


def _document_problem(raw: bytes) -> tuple[str | None, Literal["array", "group"]]:
    """(what is wrong or None, the node kind) of a ``zarr.json``'s bytes."""
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "does not parse as JSON", "group"
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
        return "is not a zarr v3 document", "group"
    kind = meta.get("node_type")
    if kind == "group":
        attrs = meta.get("attributes", {})
        return (None if isinstance(attrs, dict) else "has no attribute map"), "group"
    if kind == "array":
        try:
            ArrayV3Metadata.from_dict(dict(meta))
        except Exception as exc:
            return f"is not a valid array document ({type(exc).__name__})", "array"
        return None, "array"
    return "names no node type", "group"


def _marker_problem(raw: bytes) -> str | None:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "does not parse as JSON"
    attrs = document.get("attributes") if isinstance(document, dict) else None
    if not isinstance(attrs, dict) or attrs.get("complete") is not True:
        return "does not say complete"
    if not sealed_ok(attrs):
        return "fails its checksum"
    return None


@dataclass
class _Scan:
    """The state of one pass over a store's keys."""

    store: AtlasStore
    report: VerifyReport
    documents: dict[str, str] = field(default_factory=dict)  # node -> key of its zarr.json
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)  # valid array documents
    damaged: dict[str, tuple[str, str]] = field(default_factory=dict)  # node -> (problem, kind)
    markers: list[Marker] = field(default_factory=list)
    chunks: list[tuple[str, str, tuple[int, ...], str]] = field(default_factory=list)
    with_chunks: set[str] = field(default_factory=set)  # nodes that have chunk keys

    def documents_pass(self, keys: list[str]) -> None:
        """Parse every ``zarr.json``: markers, groups and arrays."""
        for key in keys:
            if _name(key) == _META:
                self.documents[key[: -len(_META)].rstrip("/")] = key
        for node, key in sorted(self.documents.items()):
            raw = self.store.raw_get(key) or b""
            if _is_marker(node):
                self.report.markers += 1
                problem = _marker_problem(raw)
                if problem is not None:
                    self.damaged[node] = (problem, "marker")
                else:
                    attrs = json.loads(raw)["attributes"]
                    self.markers.append(Marker(_parent(_parent(node)), _name(node), attrs))
                continue
            self.report.documents += 1
            problem, kind = _document_problem(raw)
            if problem is not None:
                self.damaged[node] = (problem, kind)
            elif kind == "array":
                self.arrays[node] = json.loads(raw)
        # Every group above a node has a document; a missing one is damage too.
        for node in list(self.documents):
            for above in _ancestors(node):
                if above not in self.documents and above not in self.damaged:
                    self.damaged[above] = ("is missing", "group")
        # An unreadable document says nothing of its kind: one with chunk keys under it, or no
        # children at all, is taken for an array (repair deletes it, and whoever made it makes
        # it again); one with nodes under it is a group (repair rewrites it empty).
        for key in keys:
            match = _CHUNK_KEY.match(key)
            if match:
                self.with_chunks.add(match.group(1))
        parents = {above for node in self.documents for above in _ancestors(node)}
        for node, (problem, damaged_kind) in list(self.damaged.items()):
            if damaged_kind == "group" and node in self.documents and node not in parents:
                self.damaged[node] = (problem, "array")

    def chunks_pass(self, keys: list[str]) -> None:
        """Check the stored bytes of every chunk of every array."""
        for key in keys:
            name = _name(key)
            if name == _META or name.endswith(".partial") or name.startswith("."):
                continue  # documents are checked above; the rest are writers' temporaries
            node = next((a for a in _ancestors(key) if a in self.arrays), None)
            if node is None:
                match = _CHUNK_KEY.match(key)
                if match and match.group(1) not in self.damaged:
                    where = match.group(1)
                    missing = (
                        "is a group document over an array's chunks"
                        if where in self.documents
                        else "is missing (its chunks are still there)"
                    )
                    self.damaged[where] = (missing, "array")
                continue
            meta = self.arrays[node]
            coords = chunk_coords(meta, key[len(node) + 1 :])
            if coords is None:
                continue
            self.report.chunks += 1
            problem = self._chunk_problem(node, meta, key, coords)
            if problem is not None:
                self.chunks.append((node, key, coords, problem))

    def _chunk_problem(
        self, node: str, meta: dict[str, Any], key: str, coords: tuple[int, ...]
    ) -> str | None:
        if has_checksum(meta):
            raw = self.store.raw_get(key)
            return None if raw is None or checksum_ok(raw) else "fails its checksum"
        self.report.decoded += 1
        try:
            self.store.array(node).get_block_selection(coords)
        except Exception as exc:
            return f"cannot be decoded ({type(exc).__name__})"
        return None

    def findings(self) -> list[Finding]:
        """Every damaged object with the units whose re-run rewrites it."""
        unit_groups = {m.group for m in self.markers} | {
            _parent(n) for n in self.documents if _name(n) == _UNITS
        }
        found = []
        for node, key, coords, problem in self.chunks:
            units = owners(node, self.markers, chunk=coords, unit_groups=unit_groups)
            found.append(Finding("chunk", key, node, problem, frozenset(units)))
        for node, (problem, kind) in sorted(self.damaged.items()):
            key = f"{node}/{_META}" if node else _META
            if kind == "marker":
                unit = (_parent(_parent(node)), _name(node))
                found.append(Finding("marker", key, node, problem, frozenset({unit}), "marker"))
                continue
            units = set()
            if _name(node) != _UNITS:  # a _units group's own document holds nothing
                units = owners(node, self.markers, unit_groups=unit_groups)
            node_kind: Literal["array", "group"] = "array" if kind == "array" else "group"
            found.append(Finding("document", key, node, problem, frozenset(units), node_kind))
        return found


def verify_store(out: str | Path) -> VerifyReport:
    """Check every chunk, marker and document of ``OUT/atlas.zarr`` (read only, no lock)."""
    store = AtlasStore.open(out, read_only=True)
    report = VerifyReport(path=str(store.path))
    keys = store.raw_keys()
    scan = _Scan(store, report)
    scan.documents_pass(keys)
    scan.chunks_pass(keys)
    report.findings = scan.findings()
    direct: set[Unit] = set()
    for finding in report.findings:
        direct |= finding.units
    report.units = sorted(enclosing(direct, scan.markers))
    # Data that no unit rewrites would be lost by deleting it: repair leaves it alone.
    report.unowned = [
        f
        for f in report.findings
        if not f.units
        and (f.kind == "chunk" or (f.node_kind == "array" and f.node in scan.with_chunks))
    ]
    return report


# --------------------------------------------------------------------------- repairing


def repair_store(out: str | Path, report: VerifyReport) -> RepairResult:
    """Make exactly the damaged units of ``report`` incomplete (see the module docstring).

    Take the driver lock around it (the CLI does). Damage that no unit rewrites is left as it
    is and stays in the report's ``unowned``.
    """
    store = AtlasStore.open(out, create=False)
    deleted: list[str] = []
    rewritten: list[str] = []
    unowned = {f.key for f in report.unowned}
    for finding in report.findings:
        if finding.key in unowned:
            continue
        if finding.kind in ("chunk", "marker"):
            store.raw_delete(finding.key)
            deleted.append(finding.key)
        elif finding.node_kind == "array":
            # Its chunks would be read through a document we no longer have: all go, and the
            # units that wrote any of them (its owners) write them again.
            for key in [*store.raw_keys(f"{finding.node}/"), finding.key]:
                store.raw_delete(key)
            deleted.append(f"{finding.node}/")
        else:
            store.raw_set(finding.key, _EMPTY_GROUP)
            rewritten.append(finding.key)
    invalidated = []
    for group, unit in report.units:
        key = f"{group}/{_UNITS}/{unit}/{_META}" if group else f"{_UNITS}/{unit}/{_META}"
        store.raw_delete(key)
        invalidated.append((group, unit))
    return RepairResult(invalidated=invalidated, deleted=deleted, rewritten=rewritten)
