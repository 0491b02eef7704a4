"""Dashboard rows: titles, evidence formatting, and the fallbacks for older records."""

from __future__ import annotations

from lossatlas.report.dashboard import claim_row, claim_title, count_verdicts, evidence_view
from tests.report._stores import evidence_claim, old_claim


def test_titles_come_from_the_claim_else_its_id() -> None:
    assert claim_title(evidence_claim("wedge.tunnel_two_blocks", "holds")) == "Tunnel two blocks"
    assert claim_title(evidence_claim("a.b", "holds", title="Own")) == "Own"
    assert claim_title(old_claim("plain", True)) == "Plain"


def test_evidence_is_formatted_and_missing_values_stay_empty() -> None:
    view = evidence_view(evidence_claim("a.b", "fails", estimate=0.123456, ci=(-1.0, 2.5)).evidence)
    assert view is not None
    assert (view.estimate, view.ci95, view.threshold, view.replicates) == (
        "0.1235", "[-1, 2.5]", "0", "3",
    )  # fmt: skip
    assert (view.control_name, view.control_estimate, view.control_verdict) == (
        "LR labels permuted", "0.05", "fails",
    )  # fmt: skip
    assert view.control_details is not None and view.control_details.kind == "mapping"
    bare = evidence_view(evidence_claim("a.c", "holds", ci=None, control=None).evidence)
    assert bare is not None and bare.ci95 == "" and bare.control_verdict == ""
    assert evidence_view(None) is None


def test_rows_fall_back_to_the_step_figure_and_link_a_figure() -> None:
    claim = evidence_claim("a.b", "inconclusive", figures=("x.png", "y.png"))
    row = claim_row(
        claim, "claim-a-b", group="s/t", group_anchor="sec", step_figure="Fig. 2",
        figure_anchors={"y.png": "fig-y"},
    )  # fmt: skip
    assert row.paper_figure == "Fig. 2" and row.verdict == "inconclusive" and row.symbol == "?"
    assert row.figures == (("x.png", "X", ""), ("y.png", "Y", "fig-y"))
    assert row.figure_anchor == "fig-y"
    own = claim_row(
        evidence_claim("a.c", "holds", paper_figure="Fig. 9"), "c", group="", group_anchor="",
        step_figure="Fig. 2", figure_anchors={},
    )  # fmt: skip
    assert own.paper_figure == "Fig. 9" and own.figure_anchor == ""
    assert dict(count_verdicts([row, own])) == {"holds": 1, "fails": 0, "inconclusive": 1}
