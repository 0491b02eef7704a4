"""Turning figures into bytes for the store, and results' tensors into arrays to draw."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are rendered to bytes, never shown

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["as_array", "figure_to_png", "plotly_to_html"]


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


def as_array(values: Any, dtype: Any = None) -> Any:
    """``values`` (an array, a list, or a tensor on any device) as a numpy array to draw."""
    import numpy as np

    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)
