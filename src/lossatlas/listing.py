"""How ``lossatlas show`` lists a store: one line per group and array, as text or a rich tree.

The store walks its hierarchy into :class:`NodeInfo` records (read from raw metadata, so stray or
torn files never break the listing); this module only turns them into lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["NodeInfo", "describe_nodes", "rich_tree", "short_json"]


def short_json(value: Any, limit: int = 60) -> str:
    """``value`` as JSON, cut to ``limit`` characters (for one-line summaries and messages)."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class NodeInfo:
    """One node of the hierarchy, as read from its ``zarr.json`` (for ``show``)."""

    path: str
    kind: Literal["group", "array"]
    attrs: dict[str, Any]
    shape: tuple[int, ...] = ()
    dtype: str = ""
    chunks: tuple[int, ...] = ()
    units_done: int | None = None

    def summary(self) -> str:
        """A one-line description: shapes for arrays, units and key attrs for groups."""
        if self.kind == "array":
            media = self.attrs.get("media_type")
            if media:
                return f"{media}, {self.shape[0] if self.shape else 0} bytes"
            return f"{self.dtype} {list(self.shape)} chunks {list(self.chunks)}"
        parts = []
        if self.units_done is not None:
            total = self.attrs.get("units_total")
            count = f"{self.units_done}/{total}" if total is not None else str(self.units_done)
            parts.append(f"units {count} complete")
        parts.extend(_attrs_summary(self.attrs))
        return ", ".join(parts) or "group"


_SKIP_ATTRS = {"lossatlas", "fingerprint", "units_total", "timings", "config"}


def _attrs_summary(attrs: dict[str, Any]) -> list[str]:
    """Short ``key=value`` items: scalars and seeds, never whole nested configs."""
    items = []
    config = attrs.get("config")
    if isinstance(config, dict):
        names = [
            f"{section}={config[section]['name']}"
            for section in ("data", "model")
            if isinstance(config.get(section), dict) and "name" in config[section]
        ]
        items.extend(names)
        if "seed" in config:
            items.append(f"seed={config['seed']}")
    for key, value in attrs.items():
        if key in _SKIP_ATTRS:
            continue
        if isinstance(value, (str, int, float, bool)) or "seed" in key:
            items.append(f"{key}={short_json(value, 40)}")
    timings = attrs.get("timings")
    if isinstance(timings, dict) and timings:
        total = sum(v for v in timings.values() if isinstance(v, (int, float)))
        items.append(f"time={total:.1f}s")
    return items


def describe_nodes(path: str, nodes: list[NodeInfo]) -> str:
    """A plain-text listing: the store's path, then one indented line per node."""
    lines = [path]
    for node in nodes:
        if not node.path:
            lines.append(f"  {node.summary()}")
            continue
        depth = node.path.count("/") + 1
        label = node.path.rsplit("/", 1)[-1]
        lines.append(f"{'  ' * depth}{label}: {node.summary()}")
    return "\n".join(lines)


def rich_tree(path: str, nodes: list[NodeInfo]) -> Any:
    """The same listing as a ``rich.tree.Tree`` (groups bold, arrays with their layout)."""
    from rich.markup import escape
    from rich.tree import Tree

    root_summary = nodes[0].summary() if nodes else ""
    tree = Tree(f"[bold]{escape(path)}[/bold]  {escape(root_summary)}")
    branches: dict[str, Tree] = {"": tree}
    for node in nodes[1:]:
        parent, _, label = node.path.rpartition("/")
        style = "bold cyan" if node.kind == "group" else "green"
        text = f"[{style}]{escape(label)}[/{style}]  [dim]{escape(node.summary())}[/dim]"
        branches[node.path] = branches.get(parent, tree).add(text)
    return tree
