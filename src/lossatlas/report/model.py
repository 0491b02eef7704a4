"""The report's page model: the run, the claims dashboard, sections, figures and values.

Plain frozen records. Tests check the page through them without parsing HTML; the builders
(:mod:`~.dashboard`, :mod:`~.sections`, :mod:`~.compare`) make them from stores and
:mod:`~.render` turns them into HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "VERDICT_LABELS",
    "VERDICT_SYMBOLS",
    "ClaimRow",
    "EvidenceView",
    "ExperimentClaims",
    "FigureView",
    "NavExperiment",
    "NavPaper",
    "PaperClaims",
    "RunInfo",
    "Section",
    "Value",
    "VerdictName",
]

VerdictName = Literal["holds", "fails", "inconclusive"]
VERDICT_SYMBOLS: dict[str, str] = {"holds": "✓", "fails": "✗", "inconclusive": "?"}
VERDICT_LABELS: dict[str, str] = {
    "holds": "holds",
    "fails": "fails",
    "inconclusive": "inconclusive",
}


@dataclass(frozen=True)
class Value:
    """A stored JSON value prepared for display (see :func:`~.values.display_value`).

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
        anchor: the HTML id, for links from the dashboard and the navigation.
        caption: what the figure shows and what to look for (its stored ``caption``
            attribute, else the file name in words).
        kind: ``"image"`` (``body`` is a ``data:`` URI), ``"plotly"`` (``body`` is a trusted
            plotly fragment whose scripts the page runs when the figure is drawn) or ``"text"``
            (``body`` is shown escaped, with ``note`` saying why).
        body: see ``kind``.
        media_type: the stored media type.
        claims: ``(id, anchor, verdict)`` of the claims that cite this figure.
        note: a remark shown under the caption.
        wide: a landscape image (several panels) that gets the full width of the page.
        alt: the text alternative of an image (its stored ``alt``, else the caption).
        title: the figure's short title in the navigation.
        traces: the plotly trace types of an interactive figure (``("scatter",)``).
    """

    name: str
    path: str
    anchor: str
    caption: str
    kind: Literal["image", "plotly", "text"]
    body: str
    media_type: str
    claims: tuple[tuple[str, str, str], ...] = ()
    note: str = ""
    wide: bool = False
    alt: str = ""
    title: str = ""
    traces: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvidenceView:
    """A claim's evidence, formatted (``""`` where the record has no value).

    Attributes:
        statistic: what the estimate is, in words.
        estimate: the deciding number.
        ci95: its 95% interval, ``"[low, high]"``.
        threshold: the value the estimate is compared with.
        replicates: independent units behind the estimate.
        control_name, control_estimate, control_verdict: the negative control's test.
        control_details: anything else the control recorded.
    """

    statistic: str
    estimate: str
    ci95: str
    threshold: str
    replicates: str
    control_name: str = ""
    control_estimate: str = ""
    control_verdict: str = ""
    control_details: Value | None = None


@dataclass(frozen=True)
class ClaimRow:
    """One claim: its dashboard row, and the full record behind its disclosure.

    Attributes:
        id: the claim id.
        anchor: the HTML id of its row.
        title: its short title (the claim's own, else derived from the id).
        paper_figure: the paper's figure or table it is read from (the claim's own, else its
            experiment's); ``""`` when neither says.
        verdict: ``holds``, ``fails`` or ``inconclusive``.
        evidence: what decided it; ``None`` for records written before the evidence engine.
        statement, paper_value, paper_setup, measured, setup, criterion, notes: the record.
        group: the store group that produced it (``""`` if unknown).
        group_anchor: the anchor of that group's section.
        figures: ``(file name, caption, anchor or "")`` of the figures that show it.
    """

    id: str
    anchor: str
    title: str
    paper_figure: str
    verdict: VerdictName
    evidence: EvidenceView | None
    statement: str
    paper_value: Value
    paper_setup: str
    measured: Value
    setup: str
    criterion: str
    notes: str
    group: str
    group_anchor: str
    figures: tuple[tuple[str, str, str], ...]

    @property
    def symbol(self) -> str:
        """✓, ✗ or ? (inconclusive)."""
        return VERDICT_SYMBOLS[self.verdict]

    @property
    def figure_anchor(self) -> str:
        """The first of its figures that the page shows, else its group's section."""
        return next((a for _, _, a in self.figures if a), self.group_anchor)


@dataclass(frozen=True)
class ExperimentClaims:
    """The dashboard rows of one experiment (a step's group), in id order."""

    title: str
    anchor: str  # its section ("" when the claims name no group)
    paper_figure: str
    rows: tuple[ClaimRow, ...]


@dataclass(frozen=True)
class PaperClaims:
    """One paper's block of the dashboard.

    Attributes:
        family: its top-level group (``"wedges"``).
        title, text: how the group describes itself (title and citation).
        counts: ``(verdict, count)`` for holds, fails and inconclusive.
        experiments: its experiments' claims, in the order the study runs them.
    """

    family: str
    title: str
    text: str
    counts: tuple[tuple[VerdictName, int], ...]
    experiments: tuple[ExperimentClaims, ...]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)


@dataclass(frozen=True)
class RunInfo:
    """What names a run: the page title and the comparison page's columns.

    Attributes:
        out: where the store lives (folder or URL), as given.
        preset: the preset the config matches (``"quick"``), ``""`` when none does.
        config_note: ``"preset quick"``, ``"quick with 2 settings changed"`` or
            ``"custom config"``.
        changed: the dotted settings that differ from ``preset`` (at most a few shown).
        seed: the root seed (``""`` when unknown).
        created: when the store was made (ISO 8601, UTC), ``""`` when unknown.
        device: the configured device and the torch build.
        version: the lossatlas version that made the store.
        title: the page title.
    """

    out: str
    preset: str
    config_note: str
    changed: tuple[str, ...]
    seed: str
    created: str
    device: str
    version: str
    title: str


@dataclass(frozen=True)
class NavExperiment:
    """One experiment in the navigation, with its figures ``(title, anchor)``."""

    title: str
    anchor: str
    figures: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class NavPaper:
    """One paper (or other top-level group) in the navigation."""

    title: str
    anchor: str  # "" when the paper has several experiments, which are then its children
    experiments: tuple[NavExperiment, ...]


@dataclass(frozen=True)
class Section:
    """One section of the page; the template renders the fields that its ``kind`` uses.

    Attributes:
        anchor: the HTML id (navigation target).
        title: the heading.
        kind: ``"dashboard"``, ``"experiment"`` (one store group), ``"setup"`` or
            ``"layout"`` (the store-layout appendix).
        group: the store group of an ``"experiment"`` section.
        family: the top-level group (``"wedges"``, ``"horoi"``, ``"probes"``, ``"train"``...).
        family_title, family_text: how that group describes itself (its ``section`` attrs: a
            study's title and citation); the group's path and ``""`` when it does not.
        paper_figure: the paper's figure or table an experiment reproduces (``""``: not
            recorded).
        subtitle: one line under the heading (what the group holds).
        paragraphs: the dashboard's opening lines, ``(who, setup)``: this run's setup and each
            paper's, so a reader sees how they differ.
        papers: the dashboard's claims by paper.
        counts: ``(verdict, count)`` over all claims (dashboard).
        facts: settings and attributes as ``(name, value)`` pairs.
        results: the group's ``result`` scalars (or, for training, the final-epoch metrics).
        results_caption: the heading of ``results``.
        figures: the figures, static first, then interactive.
        claims: the group's own claims (experiment sections).
        timings: ``(group, stage, seconds)`` rows.
        details: ``(summary, preformatted text)`` collapsible blocks.
        layout: ``(title, anchor, group path, what it holds)`` rows of the store-layout
            appendix.
    """

    anchor: str
    title: str
    kind: Literal["dashboard", "experiment", "setup", "layout"]
    group: str = ""
    family: str = ""
    family_title: str = ""
    family_text: str = ""
    paper_figure: str = ""
    subtitle: str = ""
    paragraphs: tuple[tuple[str, str], ...] = ()
    papers: tuple[PaperClaims, ...] = ()
    counts: tuple[tuple[VerdictName, int], ...] = ()
    facts: tuple[tuple[str, Value], ...] = ()
    results: tuple[tuple[str, Value], ...] = ()
    results_caption: str = ""
    figures: tuple[FigureView, ...] = ()
    claims: tuple[ClaimRow, ...] = ()
    timings: tuple[tuple[str, str, float], ...] = ()
    details: tuple[tuple[str, str], ...] = ()
    layout: tuple[tuple[str, str, str, str], ...] = ()
