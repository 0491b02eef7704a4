"""The HTML report: the atlas store rendered as one self-contained, offline page.

``report/`` reads the store and never recomputes: every number on the page is a stored
attribute or array element and every figure a stored blob (training curves are *drawn* from the
stored history arrays by :mod:`lossatlas.plots.history`, nothing more). :mod:`~.model` is the
page model, :mod:`~.sections` builds it from the store, :mod:`~.figures` reads stored figures,
and :mod:`~.render` writes the HTML.
"""

from lossatlas.report.figures import is_plotly_fragment
from lossatlas.report.model import ClaimRow, FigureView, Section, Value, display_value
from lossatlas.report.render import build_report, render_html
from lossatlas.report.sections import report_sections

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
