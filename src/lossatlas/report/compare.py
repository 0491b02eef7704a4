"""Several runs side by side: each claim's verdict and estimate in every run, and which claims'
verdicts differ (seeds, presets, devices, versions).

Every store is opened read-only and nothing is recomputed. Claims are grouped by paper and
experiment as in the first run that has them; a claim missing from a run counts as a
difference (``absent``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lossatlas.errors import StoreError
from lossatlas.report.dashboard import count_verdicts, store_claims
from lossatlas.report.layout import Anchors
from lossatlas.report.model import ClaimRow, PaperClaims, RunInfo, VerdictName
from lossatlas.report.run_info import run_info
from lossatlas.store import AtlasStore

__all__ = ["CompareCell", "CompareGroup", "CompareRow", "Comparison", "compare_runs"]

_RUN_FIELDS = (
    ("config", "config_note"),
    ("seed", "seed"),
    ("device", "device"),
    ("lossatlas", "version"),
    ("created", "created"),
)


@dataclass(frozen=True)
class CompareCell:
    """One claim in one run: its verdict (``"absent"`` when the run has no such claim) and
    its formatted estimate and interval (``""`` without evidence)."""

    verdict: str  # a VerdictName, or "absent"
    estimate: str = ""
    ci95: str = ""


@dataclass(frozen=True)
class CompareRow:
    """One claim across the runs; ``differs`` when its verdicts are not all the same."""

    id: str
    anchor: str
    title: str
    paper_figure: str
    cells: tuple[CompareCell, ...]
    differs: bool


@dataclass(frozen=True)
class CompareGroup:
    """The claims of one experiment of one paper."""

    paper: str
    experiment: str
    rows: tuple[CompareRow, ...]


@dataclass(frozen=True)
class Comparison:
    """The comparison page.

    Attributes:
        title: the page title.
        runs: each run's names, in the order given (columns A, B, ...).
        labels: the column labels (``"A"``, ``"B"``, ...).
        run_table: ``(field, values per run, whether they vary)`` rows describing the runs.
        counts: ``(verdict, count)`` per run.
        groups: the claims by paper and experiment.
        differing: the rows whose verdicts differ, in page order.
    """

    title: str
    runs: tuple[RunInfo, ...]
    labels: tuple[str, ...]
    run_table: tuple[tuple[str, tuple[str, ...], bool], ...]
    counts: tuple[tuple[tuple[VerdictName, int], ...], ...]
    groups: tuple[CompareGroup, ...]
    differing: tuple[CompareRow, ...]

    @property
    def total(self) -> int:
        """How many distinct claims the runs hold."""
        return sum(len(g.rows) for g in self.groups)


def _label(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _cell(row: ClaimRow | None) -> CompareCell:
    if row is None:
        return CompareCell("absent")
    evidence = row.evidence
    if evidence is None:
        return CompareCell(row.verdict)
    return CompareCell(row.verdict, evidence.estimate, evidence.ci95)


def compare_runs(outs: Sequence[str | Path]) -> Comparison:
    """The comparison of the runs in ``outs`` (folders or URLs holding ``atlas.zarr``).

    Raises:
        StoreError: fewer than two runs, or one of them has no store (one line).
    """
    if len(outs) < 2:
        raise StoreError(f"--compare needs at least two runs, got {len(outs)}")
    stores = [AtlasStore.open(out, read_only=True) for out in outs]
    infos = tuple(run_info(store, str(out)) for store, out in zip(stores, outs, strict=True))
    papers: list[tuple[PaperClaims, ...]] = [store_claims(store) for store in stores]
    by_run: list[dict[str, ClaimRow]] = [
        {r.id: r for p in run for e in p.experiments for r in e.rows} for run in papers
    ]
    placed: dict[tuple[str, str], list[str]] = {}  # (paper, experiment) -> claim ids
    seen: set[str] = set()
    for run in papers:
        for paper in run:
            for experiment in paper.experiments:
                for row in experiment.rows:
                    if row.id not in seen:
                        seen.add(row.id)
                        placed.setdefault((paper.title, experiment.title), []).append(row.id)
    groups = []
    differing: list[CompareRow] = []
    anchors = Anchors()
    for (paper_title, experiment_title), ids in placed.items():
        rows: list[CompareRow] = []
        for claim_id in ids:
            cells = tuple(_cell(run.get(claim_id)) for run in by_run)
            first = next(run[claim_id] for run in by_run if claim_id in run)
            compared = CompareRow(
                id=claim_id,
                anchor=anchors.make("claim", claim_id),
                title=first.title,
                paper_figure=first.paper_figure,
                cells=cells,
                differs=len({c.verdict for c in cells}) > 1,
            )
            rows.append(compared)
            if compared.differs:
                differing.append(compared)
        groups.append(CompareGroup(paper_title, experiment_title, tuple(rows)))
    run_table = []
    for name, attribute in _RUN_FIELDS:
        values = tuple(str(getattr(info, attribute)) or "–" for info in infos)
        run_table.append((name, values, len(set(values)) > 1))
    counts = tuple(
        count_verdicts([r for p in run for e in p.experiments for r in e.rows]) for run in papers
    )
    return Comparison(
        title=f"lossatlas · {len(outs)} runs compared",
        runs=infos,
        labels=tuple(_label(i) for i in range(len(outs))),
        run_table=tuple(run_table),
        counts=counts,
        groups=tuple(groups),
        differing=tuple(differing),
    )
