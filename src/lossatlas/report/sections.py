"""The page model built from the store: the dashboard, one section per experiment, the setup and
the store-layout appendix, and the navigation over them.

:func:`report_sections` reads the store only; nothing is recomputed (training curves are drawn
from the stored history arrays). Which groups get a section, their titles, the paper figures
they reproduce and their order come from the store (:mod:`~.layout`).
"""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import yaml

from lossatlas.claims import Claim, load_claims
from lossatlas.plots import figure_to_png
from lossatlas.plots.history import metric_order, plot_training_curves
from lossatlas.report.dashboard import claim_rows, count_verdicts, group_claims
from lossatlas.report.figures import figure_view, image_view
from lossatlas.report.layout import Anchors, StoreLayout
from lossatlas.report.model import (
    ClaimRow,
    FigureView,
    NavExperiment,
    NavPaper,
    Section,
    Value,
)
from lossatlas.report.run_info import setup_paragraphs
from lossatlas.report.values import (
    display_value,
    duration,
    fact_value,
    facts_of,
    format_scalar,
    is_scalar,
)
from lossatlas.stages.output import SECTION_ATTR
from lossatlas.store import AtlasStore

__all__ = ["navigation", "package_version", "report_sections"]

_FIXED_ANCHORS = ("dashboard", "setup", "store-layout")
_ARRAYS_SHOWN = 200  # arrays listed per group in the appendix

# Group attributes shown elsewhere (result, timings, claims) or only useful to the machinery.
_HIDDEN_ATTRS = {
    "fingerprint",
    "timings",
    "result",
    "claims",
    "arrays",
    "units_total",
    "lossatlas",
    "config",
    "description",
    "scalar_arrays",
    SECTION_ATTR,
}

# Settings worth a line in the setup section, as dotted config keys (shown when present).
_KEY_SETTINGS = (
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

_CURVES_CAPTION = (
    "Training curves: loss and accuracy of the members on each split, per epoch (epoch 0 is "
    "before training). Look for a smooth fall of the training loss and for the gap between "
    "training and test curves."
)


def report_sections(store: AtlasStore) -> list[Section]:
    """The page as data: the dashboard, one section per experiment, setup, store layout.

    Reads ``store`` only; nothing is recomputed.
    """
    layout = StoreLayout(store)
    anchors = Anchors(*_FIXED_ANCHORS)
    claims = load_claims(store)
    group_anchor = {g: anchors.make(layout.title(g)) for g in layout.sections}
    figure_anchor = {
        (g, node.name): anchors.make("fig", group_anchor[g], node.name)
        for g in layout.sections
        for node in layout.figure_nodes(g)
    }
    rows = claim_rows(layout, claims, anchors, group_anchor, figure_anchor)
    experiments = [
        _experiment(layout, g, group_anchor[g], rows, figure_anchor, anchors)
        for g in layout.sections
    ]
    return [
        _dashboard(store, layout, claims, rows),
        *experiments,
        _setup(store, layout),
        _store_layout(store, layout, group_anchor),
    ]


# --------------------------------------------------------------------------- dashboard


def _dashboard(
    store: AtlasStore, layout: StoreLayout, claims: list[Claim], rows: list[ClaimRow]
) -> Section:
    papers = group_claims(layout, rows)
    by_id = {c.id: c for c in claims}
    described = [
        (
            p.title,
            p.text,
            str(layout.families.get(p.family, {}).get("paper_setup") or ""),
            [by_id[r.id] for e in p.experiments for r in e.rows],
        )
        for p in papers
        if p.family
    ]
    return Section(
        anchor="dashboard",
        title="Claims dashboard",
        kind="dashboard",
        subtitle="One row per claim of the papers: our estimate with its 95% interval, the "
        "verdict, the replicates behind it and the negative control's result. Open a row "
        "for the full record.",
        paragraphs=setup_paragraphs(store, described),
        papers=papers,
        counts=count_verdicts(rows),
    )


# --------------------------------------------------------------------------- experiments


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


def _training_curves(history: dict[str, np.ndarray], group: str, anchors: Anchors) -> FigureView:
    curves = figure_to_png(plot_training_curves(history))
    name = "training_curves.png"
    view = image_view(
        name, "", anchors.make("fig", group, name), curves, "image/png", (), caption=_CURVES_CAPTION
    )
    return replace(view, note="drawn by the report from the stored history arrays")


def _static_twins(figures: list[FigureView]) -> list[FigureView]:
    """Drop an interactive figure whose static twin (same name, ``.png``) is on the page:
    interaction does not pay for its bytes there. Its caption says it is stored."""
    stems = {f.name.rsplit(".", 1)[0] for f in figures if f.kind == "image"}
    kept = []
    for figure in figures:
        stem = figure.name.rsplit(".", 1)[0]
        if figure.kind == "plotly" and stem in stems:
            continue
        kept.append(figure)
    twins = {f.name.rsplit(".", 1)[0]: f.name for f in figures if f not in kept}
    return [
        replace(f, note=_join(f.note, f"an interactive version is stored as {twin}"))
        if (twin := twins.get(f.name.rsplit(".", 1)[0])) and f.kind == "image"
        else f
        for f in kept
    ]


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _experiment(
    layout: StoreLayout,
    group: str,
    anchor: str,
    rows: list[ClaimRow],
    figure_anchor: dict[tuple[str, str], str],
    anchors: Anchors,
) -> Section:
    store = layout.store
    attrs = layout.attrs(group)
    family = group.split("/", 1)[0]
    own_claims = tuple(r for r in rows if r.group == group)
    cited: dict[str, list[tuple[str, str, str]]] = {}
    for row in own_claims:
        for name, _, _ in row.figures:
            cited.setdefault(name, []).append((row.id, row.anchor, row.verdict))

    facts: list[tuple[str, Any]] = [(k, v) for k, v in attrs.items() if k not in _HIDDEN_ATTRS]
    units_total = attrs.get("units_total")
    if units_total is not None:
        facts.append(("units complete", f"{len(store.completed_units(group))}/{units_total}"))
    figures: list[FigureView] = []
    results: tuple[tuple[str, Value], ...] = ()
    results_caption = ""
    history = layout.history_arrays(group)
    if history:
        figures.append(_training_curves(history, group, anchors))
        results = _final_epoch(history)
        results_caption = "Final epoch, min / median / max over members"
    if store.has(f"{group}/diverged"):
        diverged = store.read(f"{group}/diverged")
        facts.append(("diverged members", f"{int(np.count_nonzero(diverged))} of {diverged.size}"))
    for node in layout.figure_nodes(group):
        anchor_of = figure_anchor[(group, node.name)]
        figures.append(figure_view(store, node.path, anchor_of, tuple(cited.get(node.name, ()))))
    figures = _static_twins(figures)
    # Static images first, in a grid; interactive figures take the full width below them.
    figures.sort(key=lambda f: f.kind == "plotly")
    if isinstance(attrs.get("result"), dict) and attrs["result"]:
        results = facts_of(attrs["result"])
        results_caption = "Stored results"
    paper_figure = layout.paper_figure(group) or _claims_figure(own_claims)
    return Section(
        anchor=anchor,
        title=layout.title(group),
        kind="experiment",
        group=group,
        family=family,
        family_title=layout.family_title(family),
        family_text=layout.family_text(family),
        paper_figure=paper_figure,
        subtitle=_subtitle(layout, group, attrs),
        facts=tuple((k, fact_value(v)) for k, v in facts),
        results=results,
        results_caption=results_caption,
        figures=tuple(figures),
        claims=own_claims,
        timings=tuple((group, k, float(v)) for k, v in store.timings(group).items() if _is_num(v)),
    )


def _claims_figure(rows: tuple[ClaimRow, ...]) -> str:
    """The paper figures an experiment's claims name, joined (``""`` when none do)."""
    return "; ".join(dict.fromkeys(r.paper_figure for r in rows if r.paper_figure))


def _subtitle(layout: StoreLayout, group: str, attrs: dict[str, Any]) -> str:
    """The group's description when the title is something else, else the family's text."""
    description = attrs.get("description")
    if isinstance(description, str) and description != layout.title(group):
        return description
    if group == group.split("/", 1)[0]:
        return layout.family_text(group)
    return ""


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def navigation(sections: list[Section]) -> tuple[NavPaper, ...]:
    """Papers (top-level groups), then their experiments, then each experiment's figures."""
    papers: dict[str, list[Section]] = {}
    for section in sections:
        if section.kind == "experiment":
            papers.setdefault(section.family, []).append(section)
    nav = []
    for experiments in papers.values():
        items = tuple(
            NavExperiment(s.title, s.anchor, tuple((f.title, f.anchor) for f in s.figures))
            for s in experiments
        )
        single = len(experiments) == 1 and experiments[0].group == experiments[0].family
        nav.append(
            NavPaper(experiments[0].family_title, experiments[0].anchor if single else "", items)
        )
    return tuple(nav)


# --------------------------------------------------------------------------- appendices


def _dotted(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _group_time(timings: dict[str, Any]) -> float:
    """A group's wall time: its longest recorded stage (stages nest: ``units`` contains
    ``compute``, so summing them would count the same seconds twice)."""
    return max((float(v) for v in timings.values() if _is_num(v)), default=0.0)


def _total_time(store: AtlasStore, layout: StoreLayout) -> float:
    """Wall time of everything recorded: outermost timed groups summed, or ``run``'s own root
    timer when larger (after a resumed run it covers only the last invocation)."""
    timed = [g for g in [*layout.sections, *layout.hidden] if store.timings(g)]
    outer = [g for g in timed if not any(g.startswith(f"{t}/") for t in timed)]
    return max(sum(_group_time(store.timings(g)) for g in outer), _group_time(store.timings("")))


def _setup(store: AtlasStore, layout: StoreLayout) -> Section:
    root = store.attrs()
    versions: dict[str, Any] = root.get("lossatlas") or {}
    config: dict[str, Any] = root.get("config") or {}
    versions = versions if isinstance(versions, dict) else {}
    config = config if isinstance(config, dict) else {}
    facts = [(f"{k}", Value("text", format_scalar(v))) for k, v in versions.items()]
    facts.append(
        ("report rendered with", Value("text", f"jinja2 {package_version('jinja2')}, "
                                               f"matplotlib {package_version('matplotlib')}, "
                                               f"plotly {package_version('plotly')}"))
    )  # fmt: skip
    settings = [
        (key, display_value(value))
        for key in _KEY_SETTINGS
        if (value := _dotted(config, key)) is not None and is_scalar(value)
    ]
    settings.append(("total time", Value("text", duration(_total_time(store, layout)))))
    timings = [
        (group or "(root)", str(stage), float(seconds))
        for group in ["", *layout.sections, *layout.hidden]
        for stage, seconds in store.timings(group).items()
        if _is_num(seconds)
    ]
    details = []
    if config:
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=100)
        details.append(("Configuration (YAML)", text))
    return Section(
        anchor="setup",
        title="Setup, timings and versions",
        kind="setup",
        subtitle="The run's key settings, the package versions recorded when the store was "
        "created, the wall time of every stage, and the full configuration.",
        results=tuple(settings),
        facts=tuple(facts),
        timings=tuple(timings),
        details=tuple(details),
    )


def _store_layout(store: AtlasStore, layout: StoreLayout, group_anchor: dict[str, str]) -> Section:
    rows = []
    arrays = []
    for group in sorted([*layout.sections, *layout.hidden]):
        owner = layout.section_of(group)
        title = layout.title(owner) if owner else "(not shown)"
        if owner and owner != group:
            title = f"part of {title}"
        held = layout.arrays_of(group) if group in layout.sections else []
        n_figures = len(layout.figure_nodes(group))
        what = ", ".join(
            part
            for part in (
                f"{n_figures} figure{'s' if n_figures != 1 else ''}" if n_figures else "",
                f"{len(held)} arrays" if held else "",
            )
            if part
        )
        rows.append((title, group_anchor.get(owner, ""), group, what or "results and timings"))
        if held:
            listed = [f"{n.path}  {n.summary}" for n in held[:_ARRAYS_SHOWN]]
            if len(held) > _ARRAYS_SHOWN:
                listed.append(f"… and {len(held) - _ARRAYS_SHOWN} more")
            arrays.append("\n".join(listed))
    details = [("Store contents", store.describe())]
    if arrays:
        details.insert(0, ("Stored arrays by group", "\n\n".join(arrays)))
    return Section(
        anchor="store-layout",
        title="Appendix: store layout",
        kind="layout",
        subtitle=f"Where each experiment lives in {store.path}, for reading the arrays "
        "directly (lossatlas show OUT lists them too).",
        layout=tuple(rows),
        details=tuple(details),
    )


def package_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"
