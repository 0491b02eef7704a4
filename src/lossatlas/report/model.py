"""The report's page model: sections, claim rows, figures and values, as plain records.

Tests check the page through these records without parsing HTML; :mod:`~.sections` builds them
from the store and :mod:`~.render` turns them into HTML.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

__all__ = [
    "ClaimRow",
    "FigureView",
    "Section",
    "Value",
    "clip",
    "display_value",
    "duration",
    "fact_value",
    "facts_of",
    "format_scalar",
    "is_scalar",
    "study_links",
]

_LIST_INLINE = 10  # longer lists of numbers are abridged (the whole list sits in a <details>)
_MATRIX_INLINE = 16  # larger matrices are summarised, not tabulated
_FULL_LIMIT = 4000  # characters of an abridged value's full text
_MAX_DEPTH = 3  # nesting shown as tables; deeper values become compact JSON
_FACT_LEAVES = 16  # group attributes with more values than this are folded away


@dataclass(frozen=True)
class Value:
    """A stored JSON value prepared for display (see :func:`display_value`).

    Attributes:
        kind: ``"text"`` (a formatted scalar or compact list), ``"mapping"`` (``items`` as a
            small key/value table), ``"records"`` (a list of dicts: ``columns`` and ``rows``) or
            ``"matrix"`` (``text`` summarises it, ``rows`` hold formatted numbers).
        text: the text shown inline.
        full: the whole value when ``text`` is abridged (shown in a ``<details>``), else ``""``.
        items: ``(key, value)`` pairs of a mapping.
        columns: column names of records.
        rows: rows of records or of a matrix.
    """

    kind: Literal["text", "mapping", "records", "matrix"]
    text: str = ""
    full: str = ""
    items: tuple[tuple[str, Value], ...] = ()
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Value, ...], ...] = ()


@dataclass(frozen=True)
class FigureView:
    """One figure of a section.

    Attributes:
        name: the file name (``"width_distribution.png"``).
        path: where the blob lives in the store (``""`` for figures the report drew).
        anchor: the HTML id, for links from the claims table.
        caption: the file name turned into words.
        kind: ``"image"`` (``body`` is a ``data:`` URI), ``"plotly"`` (``body`` is a trusted
            plotly fragment) or ``"text"`` (``body`` is shown escaped, with ``note`` saying why).
        body: see ``kind``.
        media_type: the stored media type.
        claims: ``(id, anchor)`` of the claims that cite this figure.
        note: a remark shown under the caption.
        wide: a landscape image (several panels) that gets the full width of the page.
    """

    name: str
    path: str
    anchor: str
    caption: str
    kind: Literal["image", "plotly", "text"]
    body: str
    media_type: str
    claims: tuple[tuple[str, str], ...] = ()  # (claim id, anchor of its row)
    note: str = ""
    wide: bool = False


@dataclass(frozen=True)
class ClaimRow:
    """One row of the claims table: the paper's statement and number beside ours."""

    id: str
    anchor: str
    statement: str
    paper_value: Value
    paper_setup: str
    measured: Value
    setup: str
    criterion: str
    holds: bool | None
    notes: str
    group: str  # the store group that produced it ("" if unknown)
    group_anchor: str
    figures: tuple[tuple[str, str, str], ...]  # (file name, caption, anchor or "" if absent)

    @property
    def status(self) -> Literal["holds", "fails", "undecided"]:
        """``"holds"``, ``"fails"`` or ``"undecided"`` (also the CSS class)."""
        if self.holds is None:
            return "undecided"
        return "holds" if self.holds else "fails"

    @property
    def symbol(self) -> str:
        """✓, ✗ or – (undecided)."""
        return {"holds": "✓", "fails": "✗", "undecided": "–"}[self.status]


@dataclass(frozen=True)
class Section:
    """One section of the page; the template renders the fields that its ``kind`` uses.

    Attributes:
        anchor: the HTML id (table of contents target).
        title: the heading.
        kind: ``"overview"``, ``"claims"``, ``"group"`` (one store group) or ``"setup"``.
        group: the store group of a ``"group"`` section.
        family: the top-level group (``"wedges"``, ``"horoi"``, ``"probes"``, ``"train"``...).
        family_title, family_text: how that group describes itself (its ``section`` attrs: a
            study's title and citation); the group's path and ``""`` when it does not.
        subtitle: one line under the heading (a citation or what the group holds).
        facts: settings and attributes as ``(name, value)`` pairs.
        results: the group's ``result`` scalars (or, for training, the final-epoch metrics).
        results_caption: the heading of ``results``.
        figures: the figures, stored order.
        claims: claim rows (the claims section) or the group's own claims (group sections).
        counts: ``(label, count, status)`` badges (overview).
        links: the group sections by study (overview): ``(title, anchor, description,
            ((short title, anchor), ...))``; ``anchor`` is ``""`` when the study has several
            sections, which are then the children.
        timings: ``(group, stage, seconds)`` rows.
        details: ``(summary, preformatted text)`` collapsible blocks.
    """

    anchor: str
    title: str
    kind: Literal["overview", "claims", "group", "setup"]
    group: str = ""
    family: str = ""
    family_title: str = ""
    family_text: str = ""
    subtitle: str = ""
    facts: tuple[tuple[str, Value], ...] = ()
    results: tuple[tuple[str, Value], ...] = ()
    results_caption: str = ""
    figures: tuple[FigureView, ...] = ()
    claims: tuple[ClaimRow, ...] = ()
    counts: tuple[tuple[str, int, str], ...] = ()
    links: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = ()
    timings: tuple[tuple[str, str, float], ...] = ()
    details: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------- values


def format_scalar(value: Any) -> str:
    if value is None:
        return "n/a"  # claims store non-finite numbers as null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _compact(value: Any) -> str:
    """Compact JSON with numbers at 4 significant digits, for values shown as one string."""
    if isinstance(value, float):
        return format_scalar(value)
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return format_scalar(value)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def display_value(value: Any, depth: int = 0) -> Value:
    """Prepare a stored JSON value for display: scalars formatted, dicts and lists as tables.

    Long lists and big matrices are abridged inline, with the whole value kept in ``full``.
    """
    if isinstance(value, dict):
        if not value:
            return Value("text", "{}")
        if depth >= _MAX_DEPTH:
            text = _compact(value)
            return Value("text", clip(text, 120), full=clip(text, _FULL_LIMIT))
        items = tuple((str(k), display_value(v, depth + 1)) for k, v in value.items())
        return Value("mapping", items=items)
    if isinstance(value, (list, tuple)):
        return _display_list(list(value), depth)
    return Value("text", format_scalar(value))


def _display_list(value: list[Any], depth: int) -> Value:
    if not value:
        return Value("text", "[]")
    if all(isinstance(v, dict) for v in value) and depth < _MAX_DEPTH and len(value) <= 50:
        columns: list[str] = []
        for record in value:
            columns.extend(str(k) for k in record if str(k) not in columns)
        rows = tuple(
            tuple(
                display_value(record[c], depth + 1) if c in record else Value("text", "")
                for c in columns
            )
            for record in value
        )
        return Value("records", columns=tuple(columns), rows=rows)
    rows_are_numbers = all(
        isinstance(row, list) and row and all(is_scalar(x) for x in row) for row in value
    )
    if rows_are_numbers and len({len(row) for row in value}) == 1:
        n, m = len(value), len(value[0])
        summary = f"{n}×{m} matrix"
        if n <= _MATRIX_INLINE and m <= _MATRIX_INLINE:
            cells = tuple(tuple(Value("text", format_scalar(x)) for x in row) for row in value)
            return Value("matrix", summary, rows=cells)
        return Value("text", summary, full=clip(_compact(value), _FULL_LIMIT))
    text = _compact(value)
    if all(is_scalar(v) for v in value) and len(value) <= _LIST_INLINE and len(text) <= 100:
        return Value("text", text)
    if all(is_scalar(v) for v in value) and len(value) > 8:
        head = ", ".join(_compact(v) for v in value[:6])
        tail = ", ".join(_compact(v) for v in value[-2:])
        short = f"[{head}, …, {tail}] ({len(value)} values)"
        return Value("text", clip(short, 160), full=clip(text, _FULL_LIMIT))
    return Value("text", clip(text, 120), full=clip(text, _FULL_LIMIT))


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    return 1


def fact_value(value: Any) -> Value:
    """Like :func:`display_value`, but a big nested setting (a whole config section repeated in
    every group's attributes) is folded into a ``<details>`` with its YAML."""
    if isinstance(value, dict) and _leaves(value) > _FACT_LEAVES:
        keys = [str(k) for k in value]
        head = ", ".join(keys[:6]) + (", …" if len(keys) > 6 else "")
        full = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)
        return Value("text", f"{head} ({_leaves(value)} values)", full=clip(full, _FULL_LIMIT))
    return display_value(value, 1)


def facts_of(mapping: dict[str, Any]) -> tuple[tuple[str, Value], ...]:
    return tuple((str(k), fact_value(v)) for k, v in mapping.items())


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {secs:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def study_links(
    groups: Iterable[Section],
) -> tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...]:
    """Group sections gathered by study (top-level group), in page order: ``(title, anchor,
    text, children)``, with ``anchor`` ``""`` when the study has several sections (then the
    children, ``(short title, anchor)``, link them)."""
    by_family: dict[str, list[Section]] = {}
    for section in groups:
        by_family.setdefault(section.family, []).append(section)
    links = []
    for family, sections in by_family.items():
        title, note = sections[0].family_title or family, sections[0].family_text
        if len(sections) == 1 and sections[0].group == family:
            links.append((sections[0].title, sections[0].anchor, note, ()))
            continue
        children = tuple((s.group[len(family) + 1 :] or s.group, s.anchor) for s in sections)
        links.append((title, "", note, children))
    return tuple(links)
