"""The store's layout as the report sees it: which groups are experiments, in what order, and
what each calls itself.

The report knows no study by name. Each top-level group describes itself in a ``section``
attribute (title, one line of text, page order, step order, the paper's setup:
:func:`lossatlas.stages.output.describe_section`), and each step's group may name itself and
the paper figure it reproduces in its own ``section`` attribute
(:func:`lossatlas.stages.output.describe_step`). Stores written before these attributes still
render: their groups are titled by their paths in words and ordered by path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossatlas.claims import CLAIMS_GROUP, Claim
from lossatlas.errors import StoreError
from lossatlas.report.figures import words
from lossatlas.stages.output import SECTION_ATTR
from lossatlas.store import AtlasStore

__all__ = ["FIGURES", "HISTORY", "Anchors", "StoreLayout"]

FIGURES = "figures"
HISTORY = "history"
_CURVE_MAX_VALUES = 5_000_000  # history arrays larger than this are not drawn
_UNORDERED = 1_000  # groups that state no page order come after those that do


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


class Anchors:
    """Unique HTML ids from arbitrary names (group paths may hold any character)."""

    def __init__(self, *reserved: str) -> None:
        self._used: set[str] = set(reserved)

    def make(self, *parts: str) -> str:
        base = "-".join(_slug(p) for p in parts if p)
        anchor, n = base, 2
        while anchor in self._used:
            anchor, n = f"{base}-{n}", n + 1
        self._used.add(anchor)
        return anchor


@dataclass(frozen=True)
class Node:
    """One group or array of the store: its path, its one-line summary, and which it is."""

    path: str
    summary: str
    is_group: bool

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _section_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    section = attrs.get(SECTION_ATTR)
    return section if isinstance(section, dict) else {}


class StoreLayout:
    """Every node of the store, typed and indexed, and the groups the page shows.

    Attributes:
        nodes: every node, in store order.
        families: top-level group -> its ``section`` attrs (``{}`` if it has none).
        sections: the experiment groups, in page order (see :meth:`_shows`).
        hidden: groups with results or timings that are no section (a step's parts, a
            stage's units of work): listed in the store-layout appendix only.
    """

    def __init__(self, store: AtlasStore) -> None:
        self.store = store
        self.nodes: list[Node] = []
        self._children: dict[str, list[Node]] = {}
        self._attrs: dict[str, dict[str, Any]] = {}
        for path, summary in store.tree():
            try:
                store.group(path)
                is_group = True
            except StoreError:
                is_group = False
            node = Node(path, summary, is_group)
            self.nodes.append(node)
            if path:
                self._children.setdefault(path.rpartition("/")[0], []).append(node)
        self.families = {
            n.path: _section_attrs(self.attrs(n.path)) for n in self.children("") if n.is_group
        }
        candidates = [n.path for n in self.nodes if self._is_candidate(n)]
        shown = [g for g in candidates if self._shows(g, candidates)]
        self.sections = sorted(shown, key=self._rank)
        self.hidden = sorted((g for g in candidates if g not in shown), key=self._rank)

    # ------------------------------------------------------------------ nodes

    def attrs(self, path: str) -> dict[str, Any]:
        """The attributes of ``path`` (read once)."""
        if path not in self._attrs:
            self._attrs[path] = self.store.attrs(path)
        return self._attrs[path]

    def children(self, parent: str) -> list[Node]:
        """The direct children of ``parent``, in store order."""
        return self._children.get(parent, [])

    def figure_nodes(self, group: str) -> list[Node]:
        """The stored figures of ``group``, in store order."""
        return [n for n in self.children(f"{group}/{FIGURES}") if not n.is_group]

    def _child_groups(self, group: str) -> set[str]:
        return {c.name for c in self.children(group) if c.is_group}

    def _is_candidate(self, node: Node) -> bool:
        """Groups that hold something of their own: results, timings, figures, history."""
        if not node.is_group or not node.path or node.path == CLAIMS_GROUP:
            return False
        if FIGURES in node.path.split("/"):
            return False
        attrs = self.attrs(node.path)
        if "result" in attrs or "timings" in attrs:
            return True
        return bool(self._child_groups(node.path) & {FIGURES, HISTORY})

    def _shows(self, group: str, candidates: list[str]) -> bool:
        """A section: a group with figures, training history or claims, or one with results
        that is no part of another such group (a probe run without figures)."""
        listed = self.attrs(group).get("claims")
        if self._child_groups(group) & {FIGURES, HISTORY} or (isinstance(listed, list) and listed):
            return True
        nested = any(group.startswith(f"{c}/") for c in candidates)
        return "result" in self.attrs(group) and not nested

    def _rank(self, path: str) -> tuple[int, int, str]:
        """Page order: each study's stated order, its steps in the order they run, then path."""
        family, _, rest = path.partition("/")
        section = self.families.get(family, {})
        order = section.get("order")
        steps = [str(s) for s in section.get("steps") or []]
        step = rest.split("/", 1)[0]
        return (
            order if isinstance(order, int) else _UNORDERED,
            steps.index(step) if step in steps else len(steps),
            path,
        )

    # ------------------------------------------------------------------ names

    def family_title(self, family: str) -> str:
        return str(self.families.get(family, {}).get("title") or family)

    def family_text(self, family: str) -> str:
        return str(self.families.get(family, {}).get("text") or "")

    def family_order(self) -> list[str]:
        """Top-level groups in page order."""
        return sorted(self.families, key=lambda f: self._rank(f)[0::2])

    def title(self, group: str) -> str:
        """An experiment's title: its own, its description, else its path in words."""
        own = _section_attrs(self.attrs(group)).get("title")
        if isinstance(own, str) and own:
            return own
        description = self.attrs(group).get("description")
        family, _, rest = group.partition("/")
        if isinstance(description, str) and description and rest:
            return description
        if not rest:
            return self.family_title(family)
        return " · ".join(words(part) for part in rest.split("/"))

    def paper_figure(self, group: str) -> str:
        """The paper's figure or table the group reproduces (``""``: not recorded)."""
        figure = _section_attrs(self.attrs(group)).get("paper_figure")
        return figure if isinstance(figure, str) else ""

    def section_of(self, path: str) -> str:
        """The innermost section group that contains ``path`` (``""`` if none)."""
        owners = [g for g in self.sections if path == g or path.startswith(f"{g}/")]
        return max(owners, key=len, default="")

    def claim_groups(self, claims: list[Claim]) -> dict[str, str]:
        """Claim id -> the section group whose ``claims`` attribute lists it (``""``)."""
        found: dict[str, str] = {}
        for group in self.sections:
            listed = self.attrs(group).get("claims")
            if isinstance(listed, list):
                for claim_id in listed:
                    found.setdefault(str(claim_id), group)
        return {c.id: found.get(c.id, "") for c in claims}

    def arrays_of(self, group: str) -> list[Node]:
        """The stored arrays (not figures) under ``group`` that no deeper section owns."""
        inner = [g for g in self.sections if g.startswith(f"{group}/")]
        return [
            n
            for n in self.nodes
            if not n.is_group
            and n.path.startswith(f"{group}/")
            and f"/{FIGURES}/" not in f"/{n.path}"
            and not any(n.path.startswith(f"{g}/") for g in inner)
        ]

    def history_arrays(self, group: str) -> dict[str, np.ndarray]:
        """The stored ``history/{split}_{metric}`` arrays of shape (members, epochs + 1)."""
        arrays = {}
        for node in self.children(f"{group}/{HISTORY}"):
            if node.is_group:
                continue
            array = self.store.array(node.path)
            if len(array.shape) != 2 or int(np.prod(array.shape)) > _CURVE_MAX_VALUES:
                continue
            arrays[node.name] = np.asarray(array[...], dtype=float)
        return arrays
