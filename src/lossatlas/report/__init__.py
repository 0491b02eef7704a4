"""The HTML report: the atlas store rendered as one self-contained, offline page.

``report/`` reads the store and never recomputes: every number on the page is a stored
attribute or array element and every figure a stored blob (training curves are *drawn* from the
stored history arrays, nothing more).
"""

from lossatlas.report.build import (
    ClaimRow,
    FigureView,
    Section,
    Value,
    build_report,
    display_value,
    is_plotly_fragment,
    render_html,
    report_sections,
)

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
