"""Build ``OUT/report.html`` from ``OUT/atlas.zarr``: one self-contained page that works offline.

The report reads the store and never recomputes. Every number on the page is a stored attribute
or array element and every figure a stored blob. The one figure the report makes itself, the
training curves, only *draws* the stored ``history`` arrays (see :func:`_history_figure`).

The page is modelled first as a list of :class:`Section` records (:func:`report_sections`),
which tests can check without parsing HTML, and then rendered by a jinja2 template with
autoescaping, so every string that comes from the store (config values, claim text, group
names, notes) is HTML-escaped. Only two kinds of content skip escaping: base64 ``data:`` URIs of
stored images, and stored plotly ``<div>`` fragments that pass :func:`is_plotly_fragment`.
plotly.js itself is inlined once, and only when the page has an interactive figure.

Output is deterministic: the page carries no render timestamp (it shows the store's creation
time), so rendering the same store twice gives the same bytes.
"""

from __future__ import annotations

import base64
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from lossatlas.errors import StoreError
from lossatlas.location import Location, as_location, join_location, location_name, write_bytes
from lossatlas.store import AtlasStore
from lossatlas.studies.claims import CLAIMS_GROUP, Claim, load_claims

__all__ = [
    "ClaimRow",
    "FigureView",
    "Section",
    "Value",
    "build_report",
    "display_value",
    "is_plotly_fragment",
    "render_html",
    "report_sections",
]

REPORT_NAME = "report.html"
_TEMPLATE = "report.html.j2"
_FIGURES = "figures"
_HISTORY = "history"

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
}

# The studies and stage families the report knows by name; any other top-level group still gets
# a section, titled by its path. Order here is the order on the page.
_FAMILIES: dict[str, tuple[str, str]] = {
    "wedges": (
        "Wedge model",
        "Fort & Jastrzebski (2019), “Large Scale Structure of Neural Network Loss Landscapes”, "
        "NeurIPS 2019: the low-loss set as a union of high-dimensional wedges.",
    ),
    "horoi": (
        "Geometry and topology",
        "Horoi et al. (2022), “Exploring the Geometry and Topology of Neural Network Loss "
        "Landscapes”, IDA 2022: jump-and-retrain trajectories, PHATE and persistent homology.",
    ),
    "probes": (
        "Probes",
        "Probes of one trained point, run on their own (lossatlas width, surface, ...).",
    ),
    "train": (
        "Training",
        "The trained population that the studies and probes start from.",
    ),
}

_PROBE_KINDS = {
    "width": "Tunnel width: distance along random directions until the loss rises by a threshold.",
    "surface": "Loss on lines and planes through the point.",
    "curvature": "Hessian spectrum: top eigenvalues, trace and eigenvalue density.",
    "tunnel": "A low-loss tunnel between two optima.",
    "connect": "m-connectors: low loss connecting many optima.",
    "jump": "Jump and retrain from a trained optimum.",
    "ensemble": "Ensembles of snapshots and independent runs.",
}

# Steps of a study in the order they run (and are read); other groups follow by path. The horoi
# summaries carry its claims, so they come before the per-network groups.
_STEP_ORDER: dict[str, tuple[str, ...]] = {
    "wedges": ("toy", "radial_cuts", "tunnel", "connectors", "sweep", "ensemble"),
    "horoi": ("jump_summary", "embedding_summary", "compare"),
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

_LIST_INLINE = 10  # longer lists of numbers are abridged (the whole list sits in a <details>)
_MATRIX_INLINE = 16  # larger matrices are summarised, not tabulated
_FULL_LIMIT = 4000  # characters of an abridged value's full text
_TEXT_LIMIT = 4000  # characters of an untrusted HTML blob shown as text
_MAX_DEPTH = 3  # nesting shown as tables; deeper values become compact JSON
_FACT_LEAVES = 16  # group attributes with more values than this are folded away
_CURVE_MEMBERS = 20  # up to this many members get a line each; more get median and band
_CURVE_MAX_VALUES = 5_000_000  # history arrays larger than this are not drawn
_SPLIT_COLOURS = {"train": "C0", "val": "C1", "test": "C2"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WIDE_ASPECT = 1.9  # images at least this much wider than tall span the whole figure grid
_IMAGE_TYPE = re.compile(r"^image/[a-z0-9.+-]+$")

# What ``fig.to_html(full_html=False, include_plotlyjs=False)`` produces: an outer <div>, an
# optional inline config <script>, the graph <div>, and one inline <script> calling
# Plotly.newPlot. Anything else stored as HTML is shown as text.
_PLOTLY_FRAGMENT = re.compile(
    r"""\A\s*<div(\s[^<>]*)?>\s*
        (<script(\s[^<>]*)?>.*?</script>\s*)?
        <div\s+id="[A-Za-z0-9_-]+"\s+class="plotly-graph-div"[^<>]*>\s*</div>\s*
        <script(\s[^<>]*)?>(?P<code>.*?Plotly\.newPlot\(.*?)</script>\s*
        </div>\s*\Z""",
    re.DOTALL | re.VERBOSE,
)


# --------------------------------------------------------------------------- the page model


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


def _format_scalar(value: Any) -> str:
    if value is None:
        return "n/a"  # claims store non-finite numbers as null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _compact(value: Any) -> str:
    """Compact JSON with numbers at 4 significant digits, for values shown as one string."""
    if isinstance(value, float):
        return _format_scalar(value)
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return _format_scalar(value)


def _clip(text: str, limit: int) -> str:
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
            return Value("text", _clip(text, 120), full=_clip(text, _FULL_LIMIT))
        items = tuple((str(k), display_value(v, depth + 1)) for k, v in value.items())
        return Value("mapping", items=items)
    if isinstance(value, (list, tuple)):
        return _display_list(list(value), depth)
    return Value("text", _format_scalar(value))


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
        isinstance(row, list) and row and all(_is_scalar(x) for x in row) for row in value
    )
    if rows_are_numbers and len({len(row) for row in value}) == 1:
        n, m = len(value), len(value[0])
        summary = f"{n}×{m} matrix"
        if n <= _MATRIX_INLINE and m <= _MATRIX_INLINE:
            cells = tuple(tuple(Value("text", _format_scalar(x)) for x in row) for row in value)
            return Value("matrix", summary, rows=cells)
        return Value("text", summary, full=_clip(_compact(value), _FULL_LIMIT))
    text = _compact(value)
    if all(_is_scalar(v) for v in value) and len(value) <= _LIST_INLINE and len(text) <= 100:
        return Value("text", text)
    if all(_is_scalar(v) for v in value) and len(value) > 8:
        head = ", ".join(_compact(v) for v in value[:6])
        tail = ", ".join(_compact(v) for v in value[-2:])
        short = f"[{head}, …, {tail}] ({len(value)} values)"
        return Value("text", _clip(short, 160), full=_clip(text, _FULL_LIMIT))
    return Value("text", _clip(text, 120), full=_clip(text, _FULL_LIMIT))


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    return 1


def _fact_value(value: Any) -> Value:
    """Like :func:`display_value`, but a big nested setting (a whole config section repeated in
    every group's attributes) is folded into a ``<details>`` with its YAML."""
    if isinstance(value, dict) and _leaves(value) > _FACT_LEAVES:
        keys = [str(k) for k in value]
        head = ", ".join(keys[:6]) + (", …" if len(keys) > 6 else "")
        full = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=100)
        return Value("text", f"{head} ({_leaves(value)} values)", full=_clip(full, _FULL_LIMIT))
    return display_value(value, 1)


def _facts(mapping: dict[str, Any]) -> tuple[tuple[str, Value], ...]:
    return tuple((str(k), _fact_value(v)) for k, v in mapping.items())


# --------------------------------------------------------------------------- names


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _words(file_name: str) -> str:
    """``"toy_tunnel_loss.png"`` -> ``"Toy tunnel loss"``."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    words = re.sub(r"[_\-\s]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else file_name


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


# --------------------------------------------------------------------------- reading the store


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
    if "result" in attrs or "timings" in attrs or node.path == "train":
        return True
    names = {c.path.rsplit("/", 1)[-1] for c in nodes.children(node.path) if c.is_group}
    return _FIGURES in names or _HISTORY in names


def _family_rank(path: str) -> tuple[int, int, str]:
    """Page order: known studies first, their steps in the order they run, then by path."""
    family, _, rest = path.partition("/")
    families = list(_FAMILIES)
    steps = list(_STEP_ORDER.get(family, ()))
    step = rest.split("/", 1)[0]
    return (
        families.index(family) if family in families else len(families),
        steps.index(step) if step in steps else len(steps),
        path,
    )


def _study_links(
    groups: Iterable[Section],
) -> tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...]:
    """Group sections gathered by study (top-level group), in page order."""
    by_family: dict[str, list[Section]] = {}
    for section in groups:
        by_family.setdefault(section.family, []).append(section)
    links = []
    for family, sections in by_family.items():
        title, note = _FAMILIES.get(family, (family, ""))
        if len(sections) == 1 and sections[0].group == family:
            links.append((sections[0].title, sections[0].anchor, note, ()))
            continue
        children = tuple((s.group[len(family) + 1 :] or s.group, s.anchor) for s in sections)
        links.append((title, "", note, children))
    return tuple(links)


def _group_time(timings: dict[str, Any]) -> float:
    """A group's wall time: its longest recorded stage.

    Stages nest (a stage's own timer contains the executor's ``units`` time, and ``units``
    contains ``compute``), so summing them would count the same seconds twice.
    """
    numbers = [float(v) for v in timings.values() if isinstance(v, (int, float))]
    return max(numbers, default=0.0)


# --------------------------------------------------------------------------- figures


def is_plotly_fragment(text: str) -> bool:
    """Whether stored HTML looks like plotly output (``to_html(full_html=False)``).

    Only such fragments are put on the page unescaped: an outer ``<div>``, the graph ``<div>``
    and inline scripts calling ``Plotly.newPlot``, with no external ``src``.
    """
    match = _PLOTLY_FRAGMENT.match(text)
    if match is None:
        return False
    # No external resources, no nested documents: plotly fragments never need them.
    return re.search(r"<(iframe|object|embed|link|img)\b|\bsrc\s*=", text, re.IGNORECASE) is None


def _image_view(
    name: str,
    path: str,
    anchor: str,
    blob: bytes,
    media_type: str,
    claims: tuple[tuple[str, str], ...],
) -> FigureView:
    if media_type == "image/png" and not blob.startswith(_PNG_SIGNATURE):
        return FigureView(
            name, path, anchor, _words(name), "text", "", media_type, claims,
            note=f"stored as image/png but is not a PNG ({len(blob)} bytes); not shown",
        )  # fmt: skip
    uri = f"data:{media_type};base64,{base64.b64encode(blob).decode('ascii')}"
    return FigureView(
        name, path, anchor, _words(name), "image", uri, media_type, claims, wide=_is_wide(blob)
    )


def _is_wide(blob: bytes) -> bool:
    """Whether a PNG is much wider than tall (multi-panel figures), read from its header."""
    if not blob.startswith(_PNG_SIGNATURE) or len(blob) < 24:
        return False
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    return height > 0 and width / height >= _WIDE_ASPECT


def _figure_view(
    store: AtlasStore, path: str, anchor: str, claims: tuple[tuple[str, str], ...]
) -> FigureView:
    name = path.rsplit("/", 1)[-1]
    attrs = store.attrs(path)
    media_type = str(attrs.get("media_type") or "")
    if not media_type:
        media_type = "image/png" if name.endswith(".png") else "text/html"
    try:
        blob = store.load_bytes(path)
    except StoreError as exc:
        return FigureView(
            name, path, anchor, _words(name), "text", "", media_type, claims, note=str(exc)
        )
    if _IMAGE_TYPE.match(media_type):
        # <img> never runs scripts, so even SVG is safe as a data URI.
        return _image_view(name, path, anchor, blob, media_type, claims)
    text = blob.decode("utf-8", errors="replace")
    if media_type == "text/html" and is_plotly_fragment(text):
        return FigureView(name, path, anchor, _words(name), "plotly", text, media_type, claims)
    return FigureView(
        name, path, anchor, _words(name), "text", _clip(text, _TEXT_LIMIT), media_type, claims,
        note=f"{media_type} that does not look like plotly output, so it is shown as text",
    )  # fmt: skip


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


def _history_figure(history: dict[str, np.ndarray]) -> bytes:
    """Draw the stored training curves (one panel per metric, one colour per split).

    This only draws stored arrays; nothing is trained or evaluated. With many members the
    median and the 10-90 % band are drawn instead of one line each, which is still drawing.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from lossatlas.plots import figure_to_png

    metrics: dict[str, dict[str, np.ndarray]] = {}
    for name, values in history.items():
        split, _, metric = name.partition("_")
        metrics.setdefault(metric or name, {})[split] = values
    fig = Figure(figsize=(4.6 * len(metrics), 3.4))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    panels = sorted(metrics.items(), key=lambda item: _metric_order(f"train_{item[0]}"))
    for ax, (metric, splits) in zip(axes, panels, strict=True):
        ordered = sorted(splits.items(), key=lambda item: _metric_order(f"{item[0]}_{metric}"))
        for i, (split, values) in enumerate(ordered):
            colour = _SPLIT_COLOURS.get(split, f"C{3 + i}")  # a split keeps its colour
            epochs = np.arange(values.shape[1])
            if values.shape[0] <= _CURVE_MEMBERS:
                for k, row in enumerate(values):
                    ax.plot(
                        epochs,
                        row,
                        color=colour,
                        lw=1.2,
                        alpha=0.7,
                        label=split if k == 0 else None,
                    )
            else:
                with warnings.catch_warnings():  # all-NaN epochs (diverged members) draw as gaps
                    warnings.simplefilter("ignore", RuntimeWarning)
                    low, mid, high = np.nanpercentile(values, [10, 50, 90], axis=0)
                ax.fill_between(epochs, low, high, color=colour, alpha=0.2, lw=0)
                ax.plot(epochs, mid, color=colour, lw=1.5, label=f"{split} (median, 10–90 %)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel({"acc": "accuracy"}.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return figure_to_png(fig)


def _metric_order(name: str) -> tuple[int, int, str]:
    """Sort ``{split}_{metric}`` names as train, val, test and loss before accuracy."""
    split, _, metric = name.partition("_")
    splits = {"train": 0, "val": 1, "test": 2}
    return (splits.get(split, 9), 0 if metric == "loss" else 1, name)


def _final_epoch(history: dict[str, np.ndarray]) -> tuple[tuple[str, Value], ...]:
    """Min / median / max over members of each stored metric at the last epoch (display only)."""
    rows = []
    for name, values in sorted(history.items(), key=lambda item: _metric_order(item[0])):
        last = values[:, -1]
        last = last[np.isfinite(last)]
        if last.size == 0:
            rows.append((name, Value("text", "n/a (no finite value)")))
            continue
        low, mid, high = np.min(last), np.median(last), np.max(last)
        rows.append(
            (name, Value("text", " / ".join(_format_scalar(float(v)) for v in (low, mid, high))))
        )
    return tuple(rows)


# --------------------------------------------------------------------------- sections


def report_sections(store: AtlasStore) -> list[Section]:
    """The page as data: overview, claims, one section per study group, then setup.

    Reads ``store`` only; nothing is recomputed.
    """
    nodes = _Listing(store)
    anchors = _Anchors()
    for fixed in ("overview", "claims", "setup"):
        anchors.make(fixed)
    claims = load_claims(store)
    section_groups = sorted(
        (n.path for n in nodes.nodes if _is_section_group(store, n, nodes)), key=_family_rank
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
            store, nodes, g, group_anchor[g], rows, figure_anchor, anchors, arrays.get(g, [])
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
        figures.append((name, _words(name), target))
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


def _group_title(group: str) -> str:
    family, _, rest = group.partition("/")
    label = _FAMILIES.get(family, (family, ""))[0]
    return f"{label} · {rest}" if rest else label


def _group_subtitle(group: str, attrs: dict[str, Any]) -> str:
    if isinstance(attrs.get("description"), str):
        return attrs["description"]
    family = group.split("/", 1)[0]
    kind = attrs.get("kind")
    if family == "probes" and isinstance(kind, str):
        return _PROBE_KINDS.get(kind, f"A {kind} probe.")
    return _FAMILIES.get(family, ("", ""))[1]


def _group_section(
    store: AtlasStore,
    nodes: _Listing,
    group: str,
    anchor: str,
    rows: list[ClaimRow],
    figure_anchor: dict[tuple[str, str], str],
    anchors: _Anchors,
    arrays: list[_Node],
) -> Section:
    attrs = store.attrs(group)
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
        curves = _history_figure(history)
        figures.append(
            FigureView(
                name=name,
                path="",
                anchor=anchors.make("fig", group, name),
                caption="Training curves",
                kind="image",
                body="data:image/png;base64," + base64.b64encode(curves).decode("ascii"),
                media_type="image/png",
                wide=_is_wide(curves),
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
            _figure_view(store, node.path, figure_anchor[(group, name)], tuple(cited.get(name, ())))
        )
    # Static images first, in a grid; interactive figures take the full width below them.
    figures.sort(key=lambda f: f.kind == "plotly")
    if isinstance(attrs.get("result"), dict) and attrs["result"]:
        results = _facts(attrs["result"])
        results_caption = "Results (the group's stored result values)"
    timings = store.timings(group)
    listed = [f"{n.path[len(group) + 1 :]}  {n.summary}" for n in arrays]
    details: tuple[tuple[str, str], ...] = ()
    if listed:
        shown = listed[:200] + ([f"… and {len(listed) - 200} more"] if len(listed) > 200 else [])
        details = ((f"Stored arrays ({len(listed)})", "\n".join(shown)),)
    return Section(
        anchor=anchor,
        title=_group_title(group),
        kind="group",
        group=group,
        family=group.split("/", 1)[0],
        subtitle=_group_subtitle(group, attrs),
        facts=tuple((k, _fact_value(v)) for k, v in facts),
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
        if value is not None and _is_scalar(value):
            facts.append((key, display_value(value)))
    facts.append(("total time", Value("text", _duration(_total_time(store, groups)))))
    counts = (
        ("hold", sum(r.status == "holds" for r in rows), "holds"),
        ("do not hold", sum(r.status == "fails" for r in rows), "fails"),
        ("undecided", sum(r.status == "undecided" for r in rows), "undecided"),
    )
    links = _study_links(groups)
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


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {secs:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def _setup(store: AtlasStore, groups: list[str]) -> Section:
    root = store.attrs()
    versions = root.get("lossatlas") if isinstance(root.get("lossatlas"), dict) else {}
    facts = [(f"{k}", Value("text", _format_scalar(v))) for k, v in versions.items()]
    facts.append(
        ("report rendered with", Value("text", f"jinja2 {_version('jinja2')}, "
                                               f"matplotlib {_version('matplotlib')}, "
                                               f"plotly {_version('plotly')}"))
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


def _version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- rendering


def _environment() -> Environment:
    # Autoescape everything: the template only ever renders .html, and every string from the
    # store must be escaped. StrictUndefined turns template typos into errors, not blank cells.
    env = Environment(
        loader=PackageLoader("lossatlas.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["seconds"] = _duration
    env.filters["wbr"] = _break_opportunities
    return env


def _break_opportunities(text: str) -> Markup:
    """Escape ``text``, then let long dotted or snake_case names wrap after ``.`` and ``_``."""
    # Not after a dot inside a number: "0.01" stays whole.
    return Markup(re.sub(r"(_|\.(?!\d))", r"\1<wbr>", str(escape(text))))


def _plotly_js() -> Markup:
    from plotly.offline import get_plotlyjs

    code = get_plotlyjs()
    # The bundle goes inside <script>; a literal "</script" would end it early.
    return Markup(code.replace("</script", "<\\/script"))


def render_html(sections: Iterable[Section], *, title: str) -> str:
    """Render ``sections`` to one HTML page (plotly.js inlined once, if any figure needs it)."""
    sections = list(sections)
    interactive = any(f.kind == "plotly" for s in sections for f in s.figures)
    toc = _study_links(s for s in sections if s.kind == "group")
    template = _environment().get_template(_TEMPLATE)
    return template.render(
        title=title,
        sections=sections,
        toc=toc,
        plotly_js=_plotly_js() if interactive else None,
        version=_version("lossatlas"),
    )


def build_report(
    out: str | Path, *, path: str | Path | None = None, title: str | None = None
) -> Location:
    """Render ``OUT/atlas.zarr`` to ``OUT/report.html`` (or ``path``) and return where it went.

    ``out`` (and ``path``) may be a folder or an fsspec URL; the result is a ``Path`` for a
    folder and the URL string for a URL. The store is opened read-only and nothing is
    recomputed. A local (or ``file://``) report is written to a temporary file beside it and
    renamed into place, and an object store receives it in one PUT, so a reader never sees half
    a report. Raises :class:`~lossatlas.errors.StoreError` (one line) when there is no store or
    the report cannot be written.
    """
    store = AtlasStore.open(out, read_only=True)
    target = join_location(store.out_dir, REPORT_NAME) if path is None else as_location(path)
    title = title or f"lossatlas report: {location_name(store.out_dir)}"
    html = render_html(report_sections(store), title=title)
    write_bytes(target, html.encode("utf-8"))
    return target
