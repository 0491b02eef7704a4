"""The claims dashboard in the terminal (``lossatlas show --claims OUT``): a rich table."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from lossatlas.report.dashboard import store_claims
from lossatlas.report.model import VERDICT_SYMBOLS, ClaimRow
from lossatlas.report.run_info import run_info
from lossatlas.store import AtlasStore

__all__ = ["claims_table"]

_STYLES = {"holds": "bold green", "fails": "bold red", "inconclusive": "bold yellow"}
_CONTROL_STYLES = {"holds": "red", "fails": "green", "inconclusive": "yellow"}


def _estimate(row: ClaimRow) -> Text:
    evidence = row.evidence
    if evidence is None:
        return Text("no estimate recorded", style="dim italic")
    text = Text(evidence.estimate or "n/a", style="bold")
    if evidence.ci95:
        text.append(f" {evidence.ci95}")
    if evidence.threshold:
        text.append(f"\nvs {evidence.threshold}", style="dim")
    return text


def _control(row: ClaimRow) -> Text:
    evidence = row.evidence
    if evidence is None or not evidence.control_verdict:
        return Text("–", style="dim")
    text = Text(f"{evidence.control_name}\n", style="dim")
    verdict = evidence.control_verdict
    estimate = f" ({evidence.control_estimate})" if evidence.control_estimate else ""
    text.append(verdict + estimate, style=_CONTROL_STYLES.get(verdict, ""))
    return text


_COUNT_WORDS = {"holds": "hold", "fails": "fail", "inconclusive": "inconclusive"}
# (header, ratio): every experiment's table gets the same columns, so they line up.
_COLUMNS = (
    ("claim", 5),
    ("paper figure", 3),
    ("estimate [95% CI]", 3),
    ("verdict", 2),
    ("reps", 1),
    ("control", 3),
)


def _table(title: str, *, header: bool) -> Table:
    table = Table(
        title=title, title_justify="left", title_style="bold cyan", show_header=header,
        header_style="bold", expand=True,
    )  # fmt: skip
    for name, ratio in _COLUMNS:
        table.add_column(
            name,
            ratio=ratio,
            overflow="fold",
            justify="right" if name == "reps" else "left",
            min_width=14 if name == "verdict" else None,
            no_wrap=name == "verdict",
        )
    return table


def claims_table(store: AtlasStore) -> Group:
    """The run's name, one line of counts per paper, and one table per experiment with a row
    per claim, in the papers' order (as the report's dashboard)."""
    papers = store_claims(store)
    lines: list[Text | Table] = [Text(run_info(store).title, style="bold")]
    for paper in papers:
        line = Text(f"{paper.title}: ", style="bold")
        for i, (verdict, n) in enumerate(paper.counts):
            line.append(f"{n} {_COUNT_WORDS[verdict]}", style=_STYLES[verdict])
            if i < len(paper.counts) - 1:
                line.append(" · ")
        lines.append(line)
    if not papers:
        lines.append(Text("no claims in this store yet (run a study: lossatlas run)", "dim"))
        return Group(*lines)
    first = True
    for paper in papers:
        for experiment in paper.experiments:
            figure = f" · {experiment.paper_figure}" if experiment.paper_figure else ""
            table = _table(f"{paper.title} › {experiment.title}{figure}", header=first)
            first = False
            for row in experiment.rows:
                claim = Text(row.title)
                claim.append(f"\n{row.id}", style="dim")
                badge = Text(f"{VERDICT_SYMBOLS[row.verdict]} {row.verdict}", _STYLES[row.verdict])
                table.add_row(
                    claim,
                    Text(row.paper_figure or "–"),
                    _estimate(row),
                    badge,
                    Text(row.evidence.replicates if row.evidence else "–"),
                    _control(row),
                )
            lines.append(table)
    return Group(*lines)
