"""Stored JSON values prepared for display: scalars formatted, dicts and lists as small tables.

Long lists and big matrices are abridged inline, with the whole value kept for a ``<details>``.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from lossatlas.report.model import Value

__all__ = [
    "clip",
    "display_value",
    "duration",
    "fact_value",
    "facts_of",
    "format_scalar",
    "is_scalar",
]

_LIST_INLINE = 10  # longer lists of numbers are abridged (the whole list sits in a <details>)
_MATRIX_INLINE = 16  # larger matrices are summarised, not tabulated
_FULL_LIMIT = 4000  # characters of an abridged value's full text
_MAX_DEPTH = 3  # nesting shown as tables; deeper values become compact JSON
_FACT_LEAVES = 16  # group attributes with more values than this are folded away


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
