"""The page model built from the store: overview, claims, one section per group, setup.

:func:`report_sections` reads the store only; nothing is recomputed. Which groups get a section,
their titles and their order come from the store too: studies and stages describe their
top-level groups in a ``section`` attribute (title, one line of text, page order, step order),
so the report knows no study by name.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import yaml

from lossatlas.claims import CLAIMS_GROUP, Claim, load_claims
from lossatlas.errors import StoreError
from lossatlas.plots import figure_to_png
from lossatlas.plots.history import metric_order, plot_training_curves
from lossatlas.report.figures import figure_view, is_wide, words
from lossatlas.report.model import (
    ClaimRow,
    FigureView,
    Section,
    Value,
    display_value,
    duration,
    fact_value,
    facts_of,
    format_scalar,
    is_scalar,
    study_links,
)
from lossatlas.stages.output import SECTION_ATTR
from lossatlas.store import AtlasStore

__all__ = ["package_version", "report_sections"]

_FIGURES = "figures"
_HISTORY = "history"
_CURVE_MAX_VALUES = 5_000_000  # history arrays larger than this are not drawn
_UNORDERED = 1_000  # groups that state no page order come after those that do

# Group attributes shown elsewhere (result, timings, claims) or only useful to the machinery.
_HIDDEN_ATTRS = {
    "fingerprint",
    "timings",
    "result",
    "claims",
    "units_total",
    "lossatlas",
    "config",
    "description",
    "scalar_arrays",
    SECTION_ATTR,
}

# Settings worth a line in the overview, as dotted config keys (shown when present).
_KEY_SETTINGS = (
    "name",
    "preset",
    "data.name",
    "data.n_train",
    "data.label_noise",
    "model.name",
    "model.width",
    "model.depth",
    "train.members",
    "train.epochs",
    "train.optimizer",
    "train.lr",
    "train.batch_size",
    "seed",
    "device",
    "dtype",
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


class _Anchors:
    """Unique HTML ids from arbitrary names (group paths may hold any character)."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def make(self, *parts: str) -> str:
        base = "-".join(_slug(p) for p in parts if p)
        anchor, n = base, 2
        while anchor in self._used:
            anchor, n = f"{base}-{n}", n + 1
        self._used.add(anchor)
        return anchor


@dataclass(frozen=True)
class _Node:
    path: str
    summary: str
    is_group: bool


class _Listing:
    """Every node of the store, typed, with children indexed by parent path.

    ``tree`` lists paths without saying which are groups, so each node is asked once here.
    """

    def __init__(self, store: AtlasStore) -> None:
        self.nodes: list[_Node] = []
        self._children: dict[str, list[_Node]] = {}
        for path, summary in store.tree():
            try:
                store.group(path)
                is_group = True
            except StoreError:
                is_group = False
            node = _Node(path, summary, is_group)
            self.nodes.append(node)
            if path:
                self._children.setdefault(path.rpartition("/")[0], []).append(node)

    def children(self, parent: str) -> list[_Node]:
        """The direct children of ``parent``, in store order."""
        return self._children.get(parent, [])


def _is_section_group(store: AtlasStore, node: _Node, nodes: _Listing) -> bool:
    """Groups that get a section: they hold results, timings, figures or training history."""
    if not node.is_group or not node.path or node.path == CLAIMS_GROUP:
        return False
    if _FIGURES in node.path.split("/"):
        return False
    attrs = store.attrs(node.path)
    if "result" in attrs or "timings" in attrs:
        return True
    names = {c.path.rsplit("/", 1)[-1] for c in nodes.children(node.path) if c.is_group}
    return _FIGURES in names or _HISTORY in names


def _group_time(timings: dict[str, Any]) -> float:
    """A group's wall time: its longest recorded stage.

    Stages nest (a stage's own timer contains the executor's ``units`` time, and ``units``
    contains ``compute``), so summing them would count the same seconds twice.
    """
    numbers = [float(v) for v in timings.values() if isinstance(v, (int, float))]
    return max(numbers, default=0.0)


def _history_arrays(store: AtlasStore, nodes: _Listing, group: str) -> dict[str, np.ndarray]:
    """The stored ``history/{split}_{metric}`` arrays of shape (members, epochs + 1)."""
    arrays = {}
    for node in nodes.children(f"{group}/{_HISTORY}"):
        if node.is_group:
            continue
        array = store.array(node.path)
        if len(array.shape) != 2 or int(np.prod(array.shape)) > _CURVE_MAX_VALUES:
            continue
        arrays[node.path.rsplit("/", 1)[-1]] = np.asarray(array[...], dtype=float)
    return arrays


def _final_epoch(history: dict[str, np.ndarray]) -> tuple[tuple[str, Value], ...]:
    """Min / median / max over members of each stored metric at the last epoch (display only)."""
    rows = []
    for name, values in sorted(history.items(), key=lambda item: metric_order(item[0])):
        last = values[:, -1]
        last = last[np.isfinite(last)]
        if last.size == 0:
            rows.append((name, Value("text", "n/a (no finite value)")))
            continue
        low, mid, high = np.min(last), np.median(last), np.max(last)
        rows.append(
            (name, Value("text", " / ".join(format_scalar(float(v)) for v in (low, mid, high))))
        )
    return tuple(rows)


def report_sections(store: AtlasStore) -> list[Section]:
    """The page as data: overview, claims, one section per study group, then setup.

    Reads ``store`` only; nothing is recomputed.
    """
    nodes = _Listing(store)
    anchors = _Anchors()
    for fixed in ("overview", "claims", "setup"):
        anchors.make(fixed)
    claims = load_claims(store)
    families = _families(store, nodes)
    section_groups = sorted(
        (n.path for n in nodes.nodes if _is_section_group(store, n, nodes)),
        key=lambda path: _family_rank(families, path),
    )
    claim_group = _claim_groups(store, section_groups, claims)
    group_anchor = {g: anchors.make("group", g) for g in section_groups}
    figure_anchor: dict[tuple[str, str], str] = {}
    for group in section_groups:
        for node in nodes.children(f"{group}/{_FIGURES}"):
            if node.is_group:
                continue
            name = node.path.rsplit("/", 1)[-1]
            figure_anchor[(group, name)] = anchors.make("fig", group, name)
    rows = [
        _claim_row(c, anchors.make("claim", c.id), claim_group, group_anchor, figure_anchor)
        for c in claims
    ]
    arrays = _arrays_by_group(nodes, section_groups)
    groups = [
        _group_section(
            store,
            nodes,
            families,
            g,
            group_anchor[g],
            rows,
            figure_anchor,
            anchors,
            arrays.get(g, []),
        )
        for g in section_groups
    ]
    return [
        _overview(store, rows, groups),
        Section(
            anchor="claims",
            title="Claims",
            kind="claims",
            subtitle="Each paper's statement and number beside ours, with the criterion that "
            "decided it before measuring.",
            claims=tuple(rows),
        ),
        *groups,
        _setup(store, section_groups),
    ]


def _arrays_by_group(nodes: _Listing, groups: list[str]) -> dict[str, list[_Node]]:
    """The stored arrays (not figures) of each section group, each under its innermost group."""
    owned: dict[str, list[_Node]] = {}
    by_depth = sorted(groups, key=lambda g: -g.count("/"))
    for node in nodes.nodes:
        if node.is_group or f"/{_FIGURES}/" in f"/{node.path}":
            continue
        owner = next((g for g in by_depth if node.path.startswith(f"{g}/")), None)
        if owner is not None:
            owned.setdefault(owner, []).append(node)
    return owned


def _claim_groups(store: AtlasStore, groups: list[str], claims: list[Claim]) -> dict[str, str]:
    """Claim id -> the group whose ``claims`` attribute lists it."""
    found: dict[str, str] = {}
    for group in groups:
        listed = store.attrs(group).get("claims")
        if isinstance(listed, list):
            for claim_id in listed:
                found.setdefault(str(claim_id), group)
    return {c.id: found.get(c.id, "") for c in claims}


def _claim_row(
    claim: Claim,
    anchor: str,
    claim_group: dict[str, str],
    group_anchor: dict[str, str],
    figure_anchor: dict[tuple[str, str], str],
) -> ClaimRow:
    group = claim_group.get(claim.id, "")
    figures = []
    for name in claim.figures:
        target = figure_anchor.get((group, name), "")
        if not target:  # a claim may cite a figure stored by another group
            target = next((a for (_, n), a in figure_anchor.items() if n == name), "")
        figures.append((name, words(name), target))
    return ClaimRow(
        id=claim.id,
        anchor=anchor,
        statement=str(claim.statement),
        paper_value=display_value(claim.paper_value),
        paper_setup=str(claim.paper_setup),
        measured=display_value(claim.measured),
        setup=str(claim.setup),
        criterion=str(claim.criterion),
        holds=claim.holds,
        notes=str(claim.notes or ""),
        group=group,
        group_anchor=group_anchor.get(group, ""),
        figures=tuple(figures),
    )


def _families(store: AtlasStore, nodes: _Listing) -> dict[str, dict[str, Any]]:
    """Top-level group -> how it describes itself (its ``section`` attrs), ``{}`` if it does not.

    Studies and stages write these (:func:`lossatlas.stages.output.describe_section`); stores
    written before they did still render, titled by their group paths.
    """
    families: dict[str, dict[str, Any]] = {}
    for node in nodes.children(""):
        if node.is_group:
            section = store.attrs(node.path).get(SECTION_ATTR)
            families[node.path] = section if isinstance(section, dict) else {}
    return families


def _family_rank(families: dict[str, dict[str, Any]], path: str) -> tuple[int, int, str]:
    """Page order: by each study's stated order, its steps in the order they run, then by path."""
    family, _, rest = path.partition("/")
    section = families.get(family, {})
    order = section.get("order")
    steps = [str(s) for s in section.get("steps") or []]
    step = rest.split("/", 1)[0]
    return (
        order if isinstance(order, int) else _UNORDERED,
        steps.index(step) if step in steps else len(steps),
        path,
    )


def _family_title(families: dict[str, dict[str, Any]], family: str) -> str:
    return str(families.get(family, {}).get("title") or family)


def _group_title(families: dict[str, dict[str, Any]], group: str) -> str:
    family, _, rest = group.partition("/")
    label = _family_title(families, family)
    return f"{label} · {rest}" if rest else label


def _group_subtitle(families: dict[str, dict[str, Any]], group: str, attrs: dict[str, Any]) -> str:
    if isinstance(attrs.get("description"), str):
        return attrs["description"]
    return str(families.get(group.split("/", 1)[0], {}).get("text") or "")


def _group_section(
    store: AtlasStore,
    nodes: _Listing,
    families: dict[str, dict[str, Any]],
    group: str,
    anchor: str,
    rows: list[ClaimRow],
    figure_anchor: dict[tuple[str, str], str],
    anchors: _Anchors,
    arrays: list[_Node],
) -> Section:
    attrs = store.attrs(group)
    family = group.split("/", 1)[0]
    own_claims = tuple(r for r in rows if r.group == group)
    cited: dict[str, list[tuple[str, str]]] = {}
    for row in own_claims:
        for name, _, _ in row.figures:
            cited.setdefault(name, []).append((row.id, row.anchor))

    facts = [(k, v) for k, v in attrs.items() if k not in _HIDDEN_ATTRS]
    units_total = attrs.get("units_total")
    if units_total is not None:
        done = len(store.completed_units(group))
        facts.append(("units complete", f"{done}/{units_total}"))
    figures = []
    results: tuple[tuple[str, Value], ...] = ()
    results_caption = ""
    history = _history_arrays(store, nodes, group)
    if history:
        name = "training_curves.png"
        curves = figure_to_png(plot_training_curves(history))
        figures.append(
            FigureView(
                name=name,
                path="",
                anchor=anchors.make("fig", group, name),
                caption="Training curves",
                kind="image",
                body="data:image/png;base64," + base64.b64encode(curves).decode("ascii"),
                media_type="image/png",
                wide=is_wide(curves),
                note="drawn by the report from the stored history arrays (column 0 is before "
                "training)",
            )
        )
        results = _final_epoch(history)
        results_caption = "Final epoch, min / median / max over members"
    if store.has(f"{group}/diverged"):
        diverged = store.read(f"{group}/diverged")
        facts.append(("diverged members", f"{int(np.count_nonzero(diverged))} of {diverged.size}"))
    for node in nodes.children(f"{group}/{_FIGURES}"):
        if node.is_group:
            continue
        name = node.path.rsplit("/", 1)[-1]
        figures.append(
            figure_view(store, node.path, figure_anchor[(group, name)], tuple(cited.get(name, ())))
        )
    # Static images first, in a grid; interactive figures take the full width below them.
    figures.sort(key=lambda f: f.kind == "plotly")
    if isinstance(attrs.get("result"), dict) and attrs["result"]:
        results = facts_of(attrs["result"])
        results_caption = "Results (the group's stored result values)"
    timings = store.timings(group)
    listed = [f"{n.path[len(group) + 1 :]}  {n.summary}" for n in arrays]
    details: tuple[tuple[str, str], ...] = ()
    if listed:
        shown = listed[:200] + ([f"… and {len(listed) - 200} more"] if len(listed) > 200 else [])
        details = ((f"Stored arrays ({len(listed)})", "\n".join(shown)),)
    return Section(
        anchor=anchor,
        title=_group_title(families, group),
        kind="group",
        group=group,
        family=family,
        family_title=_family_title(families, family),
        family_text=str(families.get(family, {}).get("text") or ""),
        subtitle=_group_subtitle(families, group, attrs),
        facts=tuple((k, fact_value(v)) for k, v in facts),
        results=results,
        results_caption=results_caption,
        figures=tuple(figures),
        claims=own_claims,
        timings=tuple((group, k, float(v)) for k, v in timings.items() if _is_number(v)),
        details=details,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dotted(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _overview(store: AtlasStore, rows: list[ClaimRow], groups: list[Section]) -> Section:
    root = store.attrs()
    versions = root.get("lossatlas") if isinstance(root.get("lossatlas"), dict) else {}
    config = root.get("config") if isinstance(root.get("config"), dict) else {}
    facts: list[tuple[str, Value]] = [("store", Value("text", str(store.path)))]
    if versions.get("created"):
        facts.append(("store created", Value("text", str(versions["created"]))))
    for key in _KEY_SETTINGS:
        value = _dotted(config, key)
        if value is not None and is_scalar(value):
            facts.append((key, display_value(value)))
    facts.append(("total time", Value("text", duration(_total_time(store, groups)))))
    counts = (
        ("hold", sum(r.status == "holds" for r in rows), "holds"),
        ("do not hold", sum(r.status == "fails" for r in rows), "fails"),
        ("undecided", sum(r.status == "undecided" for r in rows), "undecided"),
    )
    links = study_links(groups)
    return Section(
        anchor="overview",
        title="Overview",
        kind="overview",
        subtitle="lossatlas maps the large-scale structure of neural-network loss landscapes "
        "and checks the claims of two papers on it. This page shows what the atlas store "
        "holds; it was rendered from the store alone, without recomputing anything.",
        facts=tuple(facts),
        counts=counts,
        links=links,
    )


def _total_time(store: AtlasStore, groups: list[Section]) -> float:
    """Wall time of everything recorded in the store.

    Groups are summed, except those inside a timed group (whose timer already covers them).
    ``run`` records its own wall time at the root, which covers every group it ran; after a
    resumed run it covers only the last invocation, so the larger of the two is shown.
    """
    timed = {s.group for s in groups if store.timings(s.group)}
    outer = [g for g in timed if not any(g.startswith(f"{t}/") for t in timed)]
    return max(sum(_group_time(store.timings(g)) for g in outer), _group_time(store.timings("")))


def _setup(store: AtlasStore, groups: list[str]) -> Section:
    root = store.attrs()
    versions = root.get("lossatlas") if isinstance(root.get("lossatlas"), dict) else {}
    facts = [(f"{k}", Value("text", format_scalar(v))) for k, v in versions.items()]
    facts.append(
        ("report rendered with", Value("text", f"jinja2 {package_version('jinja2')}, "
                                               f"matplotlib {package_version('matplotlib')}, "
                                               f"plotly {package_version('plotly')}"))
    )  # fmt: skip
    timings = []
    for group in ["", *groups]:
        for stage, seconds in store.timings(group).items():
            if _is_number(seconds):
                timings.append((group or "(root)", str(stage), float(seconds)))
    details = []
    config = root.get("config")
    if config is not None:
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
        details.append(("Configuration (YAML)", text))
    details.append(("Store contents", store.describe()))
    return Section(
        anchor="setup",
        title="Setup, timings and versions",
        kind="setup",
        subtitle="Package versions recorded when the store was created, wall time of every "
        "stage, and the full configuration.",
        facts=tuple(facts),
        timings=tuple(timings),
        details=tuple(details),
    )


def package_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
