"""Turning figures into bytes for the store."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are rendered to bytes, never shown

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["figure_to_png", "plotly_to_html"]


def figure_to_png(fig: Figure, *, dpi: int = 120) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (so long runs do not leak)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plotly_to_html(fig: Any) -> bytes:
    """A plotly figure as an HTML ``<div>`` fragment *without* plotly.js.

    The report inlines plotly.js once for all figures, so fragments stay small and the page
    works offline.
    """
    html = fig.to_html(full_html=False, include_plotlyjs=False)
    return html.encode()
