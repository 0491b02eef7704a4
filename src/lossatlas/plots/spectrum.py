"""Hessian eigenvalue density figures (PyHessian / Ghorbani et al. style).

These only draw: pass arrays computed by :mod:`lossatlas.probes.curvature`, e.g.
``grid = torch.linspace(lo, hi, 1000)`` and ``density = slq.density(grid, sigma)``, optionally
the top eigenvalues (``hessian_eigenvalues``) and the short-direction thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lossatlas.plots._render import figure_to_png, plotly_to_html

__all__ = ["spectrum_figure", "spectrum_html", "spectrum_plotly", "spectrum_png"]

# On a log axis a density that is exactly 0 far from the spectrum would stretch the axis to
# underflow; show six decades below the peak, which covers the outliers against the bulk.
_LOG_DECADES = 6


def _arrays(grid: Any, density: Any, eigenvalues: Any) -> tuple[np.ndarray, ...]:
    g = np.asarray(grid, dtype=np.float64).reshape(-1)
    d = np.asarray(density, dtype=np.float64).reshape(-1)
    if g.shape != d.shape:
        raise ValueError(f"grid {g.shape} and density {d.shape} must have the same shape")
    e = np.empty(0) if eigenvalues is None else np.asarray(eigenvalues, np.float64).reshape(-1)
    return g, d, e


def _floor(density: np.ndarray) -> float:
    peak = float(density.max()) if density.size else 1.0
    return peak * 10.0**-_LOG_DECADES if peak > 0 else 1e-12


def spectrum_figure(
    grid: Any,
    density: Any,
    *,
    eigenvalues: Any = None,
    thresholds: Sequence[float] = (),
    log_density: bool = True,
    title: str = "Hessian eigenvalue density",
) -> Figure:
    """A matplotlib figure of the smoothed spectral density.

    Args:
        grid: ``(G,)`` eigenvalue positions; density: ``(G,)`` values on them.
        eigenvalues: optional ``(k,)`` eigenvalues (e.g. the top of the spectrum) drawn as ticks.
        thresholds: curvature thresholds drawn as dashed vertical lines (short directions).
        log_density: log-scale density axis, where the outliers beside the bulk are visible.
    """
    g, d, e = _arrays(grid, density, eigenvalues)
    fig = Figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    if log_density:
        floor = _floor(d)
        ax.semilogy(g, np.maximum(d, floor), color="tab:blue", lw=1.2, label="SLQ density")
        ax.set_ylim(bottom=floor)
    else:
        ax.plot(g, d, color="tab:blue", lw=1.2, label="SLQ density")
    if e.size:
        base = np.full_like(e, _floor(d) if log_density else 0.0)
        ax.plot(e, base, "|", color="tab:red", ms=14, mew=1.2, label="eigenvalues")
    for i, t in enumerate(thresholds):
        ax.axvline(t, color="0.4", ls="--", lw=0.8, label="thresholds" if i == 0 else None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def spectrum_plotly(
    grid: Any,
    density: Any,
    *,
    eigenvalues: Any = None,
    thresholds: Sequence[float] = (),
    log_density: bool = True,
    title: str = "Hessian eigenvalue density",
) -> Any:
    """The interactive (plotly) version of :func:`spectrum_figure`; same arguments."""
    import plotly.graph_objects as go

    g, d, e = _arrays(grid, density, eigenvalues)
    floor = _floor(d) if log_density else 0.0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=g, y=np.maximum(d, floor), mode="lines", name="SLQ density"))
    if e.size:
        fig.add_trace(
            go.Scatter(
                x=e,
                y=np.full_like(e, floor if log_density else 0.0),
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 14, "color": "crimson"},
                name="eigenvalues",
            )
        )
    for t in thresholds:
        fig.add_vline(x=t, line_dash="dash", line_color="gray", line_width=1)
    fig.update_layout(
        title=title,
        xaxis_title="eigenvalue",
        yaxis_title="density",
        yaxis_type="log" if log_density else "linear",
        template="plotly_white",
    )
    return fig


def spectrum_png(grid: Any, density: Any, **kwargs: Any) -> bytes:
    """:func:`spectrum_figure` rendered to PNG bytes (for the store)."""
    return figure_to_png(spectrum_figure(grid, density, **kwargs))


def spectrum_html(grid: Any, density: Any, **kwargs: Any) -> bytes:
    """:func:`spectrum_plotly` as an HTML fragment without plotly.js (the report inlines it)."""
    return plotly_to_html(spectrum_plotly(grid, density, **kwargs))
