"""The verdict dashboard: one row per claim, grouped by paper and experiment.

Each row shows a short title, the paper's figure, our estimate with its 95% interval, the
verdict, the replicates and the control's result, and links to the figure that shows it; the
full record (statement, both setups, every measured value, criterion, notes) sits behind a
disclosure. Claims written before the evidence engine have no estimate: their rows say so and
keep everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lossatlas.claims import Claim, Control, Evidence, load_claims
from lossatlas.report.figures import words
from lossatlas.report.layout import Anchors, StoreLayout
from lossatlas.report.model import (
    ClaimRow,
    EvidenceView,
    ExperimentClaims,
    PaperClaims,
    VerdictName,
)
from lossatlas.report.values import display_value, format_scalar
from lossatlas.store import AtlasStore

__all__ = [
    "VERDICT_ORDER",
    "claim_row",
    "claim_rows",
    "claim_title",
    "count_verdicts",
    "evidence_view",
    "group_claims",
    "store_claims",
]

VERDICT_ORDER: tuple[VerdictName, ...] = ("holds", "fails", "inconclusive")


def claim_title(claim: Claim) -> str:
    """The claim's own title, else its id in words: ``wedge.tunnel_two_blocks`` ->
    ``"Tunnel two blocks"``."""
    if claim.title:
        return claim.title
    return words(claim.id.split(".", 1)[-1])


def _number(value: Any) -> str:
    return "" if value is None else format_scalar(value)


def _control_view(control: Control | None) -> dict[str, Any]:
    if control is None:
        return {}
    return {
        "control_name": str(control.name),
        "control_estimate": _number(control.estimate),
        "control_verdict": str(control.verdict),
        "control_details": display_value(control.details) if control.details else None,
    }


def evidence_view(evidence: Evidence | None) -> EvidenceView | None:
    """``evidence`` formatted for the page (``None`` stays ``None``)."""
    if evidence is None:
        return None
    ci = evidence.ci95
    return EvidenceView(
        statistic=str(evidence.statistic),
        estimate=_number(evidence.estimate),
        ci95="" if ci is None else f"[{_number(ci[0])}, {_number(ci[1])}]",
        threshold=_number(evidence.threshold),
        replicates=str(evidence.replicates),
        **_control_view(evidence.control),
    )


def claim_row(
    claim: Claim,
    anchor: str,
    *,
    group: str,
    group_anchor: str,
    step_figure: str,
    figure_anchors: dict[str, str],
) -> ClaimRow:
    """The dashboard row of ``claim``.

    Args:
        claim: the record.
        anchor: its row's HTML id.
        group, group_anchor: the section group that produced it and that section's anchor.
        step_figure: the paper figure its experiment reproduces (used when the claim names
            none).
        figure_anchors: figure file name -> anchor on the page, the claim's group first.
    """
    figures = tuple((n, words(n), figure_anchors.get(n, "")) for n in claim.figures)
    return ClaimRow(
        id=claim.id,
        anchor=anchor,
        title=claim_title(claim),
        paper_figure=claim.paper_figure or step_figure,
        verdict=claim.verdict or "inconclusive",
        evidence=evidence_view(claim.evidence),
        statement=str(claim.statement),
        paper_value=display_value(claim.paper_value),
        paper_setup=str(claim.paper_setup),
        measured=display_value(claim.measured),
        setup=str(claim.setup),
        criterion=str(claim.criterion),
        notes=str(claim.notes or ""),
        group=group,
        group_anchor=group_anchor,
        figures=figures,
    )


def count_verdicts(rows: Sequence[ClaimRow]) -> tuple[tuple[VerdictName, int], ...]:
    """``(verdict, count)`` for holds, fails and inconclusive, in that order."""
    return tuple((v, sum(r.verdict == v for r in rows)) for v in VERDICT_ORDER)


def claim_rows(
    layout: StoreLayout,
    claims: list[Claim],
    anchors: Anchors,
    group_anchor: dict[str, str],
    figure_anchor: dict[tuple[str, str], str],
) -> list[ClaimRow]:
    """One row per claim, in id order (see :func:`claim_row`)."""
    claim_group = layout.claim_groups(claims)
    anywhere: dict[str, str] = {}
    for (_, name), target in figure_anchor.items():
        anywhere.setdefault(name, target)
    rows = []
    for claim in claims:
        group = claim_group.get(claim.id, "")
        # A claim may cite a figure stored by another group; its own group's come first.
        own = {name: a for (owner, name), a in figure_anchor.items() if owner == group}
        rows.append(
            claim_row(
                claim,
                anchors.make("claim", claim.id),
                group=group,
                group_anchor=group_anchor.get(group, ""),
                step_figure=layout.paper_figure(group) if group else "",
                figure_anchors={**anywhere, **own},
            )
        )
    return rows


def group_claims(layout: StoreLayout, rows: list[ClaimRow]) -> tuple[PaperClaims, ...]:
    """The rows by paper (top-level group, in page order) and experiment (in step order).

    Claims that no group lists come last, under "Other claims".
    """
    by_group: dict[str, list[ClaimRow]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    papers = []
    for family in layout.family_order():
        groups = [g for g in layout.sections if g.split("/", 1)[0] == family and g in by_group]
        if not groups:
            continue
        experiments = tuple(
            ExperimentClaims(
                title=layout.title(g),
                anchor=by_group[g][0].group_anchor,
                paper_figure=layout.paper_figure(g) or _common_figure(by_group[g]),
                rows=tuple(by_group[g]),
            )
            for g in groups
        )
        family_rows = [r for e in experiments for r in e.rows]
        papers.append(
            PaperClaims(
                family=family,
                title=layout.family_title(family),
                text=layout.family_text(family),
                counts=count_verdicts(family_rows),
                experiments=experiments,
            )
        )
    if by_group.get(""):
        other = tuple(by_group[""])
        papers.append(
            PaperClaims(
                family="",
                title="Other claims",
                text="claims that no group of the store lists",
                counts=count_verdicts(other),
                experiments=(ExperimentClaims("Unattributed", "", "", other),),
            )
        )
    return tuple(papers)


def _common_figure(rows: Sequence[ClaimRow]) -> str:
    """The paper figure all of an experiment's claims name, else ``""``."""
    figures = {r.paper_figure for r in rows}
    return figures.pop() if len(figures) == 1 else ""


def store_claims(store: AtlasStore) -> tuple[PaperClaims, ...]:
    """The dashboard's rows of ``store`` by paper and experiment, without the page around them
    (for the comparison page and ``lossatlas show --claims``)."""
    layout = StoreLayout(store)
    anchors = Anchors()
    group_anchor = {g: anchors.make(layout.title(g)) for g in layout.sections}
    return group_claims(layout, claim_rows(layout, load_claims(store), anchors, group_anchor, {}))
