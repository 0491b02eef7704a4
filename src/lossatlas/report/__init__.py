"""The HTML report: the atlas store rendered as one self-contained, offline page.

``report/`` reads the store and never recomputes: every number on the page is a stored
attribute or array element and every figure a stored blob (training curves are *drawn* from the
stored history arrays by :mod:`lossatlas.plots.history`, and PNGs are re-encoded smaller,
nothing more). :mod:`~.model` is the page model; :mod:`~.layout` reads which groups are
experiments and what they call themselves; :mod:`~.dashboard` makes the claims dashboard,
:mod:`~.sections` the rest of the page, :mod:`~.run_info` the run's name and setup,
:mod:`~.compare` the comparison of several runs; :mod:`~.figures`, :mod:`~.images` and
:mod:`~.bundle` prepare figures and plotly.js; :mod:`~.render` writes the HTML and
:mod:`~.terminal` the dashboard as a rich table.
"""

from lossatlas.report.compare import Comparison, compare_runs
from lossatlas.report.dashboard import store_claims
from lossatlas.report.figures import is_plotly_fragment
from lossatlas.report.model import (
    ClaimRow,
    EvidenceView,
    ExperimentClaims,
    FigureView,
    PaperClaims,
    RunInfo,
    Section,
    Value,
)
from lossatlas.report.render import (
    build_comparison,
    build_report,
    render_comparison,
    render_html,
)
from lossatlas.report.run_info import run_info
from lossatlas.report.sections import report_sections
from lossatlas.report.terminal import claims_table
from lossatlas.report.values import display_value

__all__ = [
    "ClaimRow",
    "Comparison",
    "EvidenceView",
    "ExperimentClaims",
    "FigureView",
    "PaperClaims",
    "RunInfo",
    "Section",
    "Value",
    "build_comparison",
    "build_report",
    "claims_table",
    "compare_runs",
    "display_value",
    "is_plotly_fragment",
    "render_comparison",
    "render_html",
    "report_sections",
    "run_info",
    "store_claims",
]
