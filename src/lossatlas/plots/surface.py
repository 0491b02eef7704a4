"""Figures of loss surfaces: lines, contour maps, interactive 3-D surfaces and simplices.

These only draw what :mod:`lossatlas.probes.subspace` measured. They accept the result objects
(:class:`~lossatlas.probes.subspace.Surface`, :class:`~lossatlas.probes.subspace.SimplexSurface`)
or anything with the same attributes holding numpy arrays (e.g. arrays read back from the store).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The package __init__ imports _render first, which selects the headless Agg backend.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

__all__ = ["plot_contour", "plot_line", "plot_simplex", "plot_surface_3d"]


def _array(values: Any) -> np.ndarray:
    """A float numpy array from a tensor (any device) or array-like."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _positive(loss: np.ndarray) -> np.ndarray:
    """Loss clipped to the smallest positive finite value, so a log scale can show it."""
    finite = loss[np.isfinite(loss) & (loss > 0)]
    floor = finite.min() if finite.size else 1e-12
    return np.where(np.isfinite(loss), np.maximum(loss, floor), np.nan)


def plot_line(
    surface: Any,
    *,
    log: bool = False,
    accuracy: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Loss (and accuracy on a second axis) along a 1-D surface.

    Args:
        surface: a 1-D :class:`~lossatlas.probes.subspace.Surface` (``coords[0]`` (steps,),
            ``loss`` (steps,), ``accuracy`` (steps,)).
        log: logarithmic loss axis.
        accuracy: also draw the accuracy (right axis).
        title: axes title.
        figsize: figure size in inches.
    """
    x = _array(surface.coords[0])
    loss = _array(surface.loss).reshape(-1)
    if loss.shape != x.shape:
        raise ValueError(f"plot_line needs a 1-D surface, got loss of shape {loss.shape}")
    fig, ax = plt.subplots(figsize=figsize)
    ax.plot(x, loss, color="C0", label="loss")
    ax.set_xlabel("coordinate along the direction")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    if accuracy:
        twin = ax.twinx()
        twin.plot(x, _array(surface.accuracy).reshape(-1), color="C1", ls="--", label="accuracy")
        twin.set_ylabel("accuracy")
        twin.set_ylim(-0.02, 1.02)
    ax.axvline(0.0, color="grey", lw=0.8, alpha=0.6)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_contour(
    surface: Any,
    *,
    marks: Mapping[str, tuple[float, float]] | None = None,
    path: Any = None,
    log: bool = False,
    levels: int = 30,
    title: str | None = None,
    figsize: tuple[float, float] = (5.5, 4.5),
) -> Figure:
    """Filled contour map of the loss on a 2-D surface, with optional marked points.

    Args:
        surface: a 2-D :class:`~lossatlas.probes.subspace.Surface` (``loss[i, j]`` at
            ``(coords[0][i], coords[1][j])``).
        marks: label -> ``(a, b)`` coordinates to mark, e.g. optima. For a plane through
            points, ``surface.meta["point_coords"]`` holds them.
        path: optional ``(n, 2)`` coordinates to draw as a line, e.g. a projected trajectory
            (``surface.project(trajectory)``).
        log: logarithmic colour scale (the loss of a landscape spans decades).
        levels: number of contour levels.
        title: axes title.
        figsize: figure size in inches.
    """
    a, b = _array(surface.coords[0]), _array(surface.coords[1])
    loss = _array(surface.loss)
    if loss.shape != (a.size, b.size):
        raise ValueError(f"plot_contour needs a 2-D surface, got loss of shape {loss.shape}")
    z = loss.T  # contourf wants z[row = y index, column = x index]
    fig, ax = plt.subplots(figsize=figsize)
    if log:
        z = _positive(z)
        lo, hi = np.nanmin(z), np.nanmax(z)
        bounds = np.geomspace(lo, hi if hi > lo else lo * 10, levels)
        filled = ax.contourf(a, b, z, levels=bounds, norm=LogNorm(lo, bounds[-1]), cmap="viridis")
    else:
        z = np.nan_to_num(z, nan=np.nanmax(z))  # diverged points show as the highest loss
        filled = ax.contourf(a, b, z, levels=levels, cmap="viridis")
    fig.colorbar(filled, ax=ax, label="loss (log scale)" if log else "loss")
    if path is not None:
        pts = _array(path).reshape(-1, 2)
        ax.plot(pts[:, 0], pts[:, 1], color="white", lw=1.2, marker=".", ms=3)
    for label, (x, y) in (marks or {}).items():
        ax.plot([x], [y], marker="*", ms=12, color="red", mec="white", mew=0.8)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), color="white")
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    if getattr(surface, "kind", "") == "points":
        ax.set_aspect("equal")  # orthonormal basis: both axes are weight-space distances
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_surface_3d(surface: Any, *, log: bool = False, title: str | None = None) -> Any:
    """Interactive plotly 3-D surface of the loss over a 2-D surface.

    Args:
        surface: a 2-D :class:`~lossatlas.probes.subspace.Surface`.
        log: plot ``log10(loss)`` as the height.
        title: figure title.

    Returns:
        a ``plotly.graph_objects.Figure`` (save with ``lossatlas.plots.plotly_to_html``).
    """
    import plotly.graph_objects as go

    a, b = _array(surface.coords[0]), _array(surface.coords[1])
    loss = _array(surface.loss)
    if loss.shape != (a.size, b.size):
        raise ValueError(f"plot_surface_3d needs a 2-D surface, got loss of shape {loss.shape}")
    z = np.log10(_positive(loss)) if log else loss
    fig = go.Figure(go.Surface(x=a, y=b, z=z.T, colorscale="Viridis"))
    fig.update_layout(
        title=title,
        scene={
            "xaxis_title": "direction 1",
            "yaxis_title": "direction 2",
            "zaxis_title": "log10 loss" if log else "loss",
        },
        margin={"l": 0, "r": 0, "t": 40 if title else 10, "b": 0},
    )
    return fig


def plot_simplex(
    simplex: Any,
    *,
    log: bool = False,
    labels: list[str] | None = None,
    bins: int = 30,
    title: str | None = None,
    figsize: tuple[float, float] = (5.5, 4.5),
) -> Figure:
    """Loss over a simplex: a filled triangle for ``m = 2``, a histogram otherwise.

    Args:
        simplex: a :class:`~lossatlas.probes.subspace.SimplexSurface` (``weights``
            (P, m + 1), ``loss`` (P,)).
        log: logarithmic colour scale (triangle) or loss axis (histogram).
        labels: vertex names (default ``v0``, ``v1``, ...).
        bins: histogram bins (``m != 2``).
        title: axes title.
        figsize: figure size in inches.

    In the histogram the vertices' losses (rows with a weight of 1) are drawn as vertical lines,
    to compare the simplex's interior with its endpoints.
    """
    weights = _array(simplex.weights)
    loss = _array(simplex.loss)
    parts = weights.shape[1]
    names = labels or [f"v{i}" for i in range(parts)]
    fig, ax = plt.subplots(figsize=figsize)
    if parts == 3:
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
        xy = weights @ corners
        z = _positive(loss) if log else loss
        norm = LogNorm(np.nanmin(z), np.nanmax(z)) if log else None
        filled = ax.tricontourf(xy[:, 0], xy[:, 1], z, levels=20, cmap="viridis", norm=norm)
        fig.colorbar(filled, ax=ax, label="loss")
        ax.plot(*np.vstack([corners, corners[:1]]).T, color="black", lw=0.8)
        for name, (x, y) in zip(names, corners, strict=True):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
        ax.set_aspect("equal")
        ax.axis("off")
    else:
        finite = loss[np.isfinite(loss)]
        ax.hist(finite, bins=bins, color="C0", alpha=0.8, log=False)
        vertex_rows = np.flatnonzero(np.isclose(weights.max(axis=1), 1.0))
        for row in vertex_rows:
            vertex = int(np.argmax(weights[row]))
            ax.axvline(loss[row], color="C3", lw=1, alpha=0.8)
            ax.annotate(names[vertex], (loss[row], 0), xytext=(2, 2), textcoords="offset points")
        ax.set_xlabel("loss")
        ax.set_ylabel("points")
        if log:
            ax.set_xscale("log")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
