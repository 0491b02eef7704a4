"""Persistence figures (PAPERS.md B3, B4): barcodes, persistence diagrams, two networks compared.

These only draw what :mod:`lossatlas.analysis.topology` computed. Diagrams are
``{dim: (n, 2) array of (birth, death)}`` with infinite deaths as ``inf``; infinite bars are
drawn up to a line marked "∞" just above the largest finite value (or above ``cap``), so they
are visible yet never confused with finite ones. gudhi has its own plotting helpers, but they
scale each axes on its own; a comparison needs one shared scale for all networks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The package __init__ imports _render first, which selects the headless Agg backend.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_barcode", "plot_persistence_diagram", "plot_topology_comparison"]

# The summaries drawn by default in a comparison: size, spread and count of each dimension.
_DEFAULT_KEYS = ("total_persistence", "entropy", "n_features")


def _diagram(d: Any) -> np.ndarray:
    arr = np.asarray(d, dtype=float)
    return arr.reshape(-1, 2) if arr.size else np.empty((0, 2))


def _extent(diagrams: Sequence[np.ndarray], cap: float | None) -> tuple[float, float, float]:
    """(low, top, y of the infinity line) shared by every panel drawn from ``diagrams``."""
    finite = np.concatenate([d[np.isfinite(d)] for d in diagrams] + [np.empty(0)])
    if cap is not None:
        finite = np.append(finite, float(cap))
    low, top = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = top - low if top > low else 1.0
    return low, top, top + 0.1 * span  # the infinity line sits 10% of the range above


def _draw_diagram(
    ax: Axes, diagrams: Mapping[int, Any], low: float, inf_y: float, *, legend: bool = True
) -> None:
    margin = 0.05 * (inf_y - low if inf_y > low else 1.0)
    lo, hi = low - margin, inf_y + margin
    ax.plot([lo, hi], [lo, hi], color="0.5", linewidth=1, zorder=0)  # the diagonal
    ax.axhline(inf_y, color="0.5", linestyle="--", linewidth=1, zorder=0)
    for dim in sorted(diagrams):
        d = _diagram(diagrams[dim])
        inf = np.isinf(d[:, 1])
        deaths = np.where(inf, inf_y, d[:, 1])
        ax.scatter(d[~inf, 0], deaths[~inf], s=18, color=f"C{dim}", label=f"H{dim}")
        if inf.any():  # infinite classes: same colour, triangle markers on the ∞ line
            ax.scatter(d[inf, 0], deaths[inf], s=36, marker="^", color=f"C{dim}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.text(lo, inf_y, " ∞", va="bottom", ha="left", color="0.3")
    ax.set_xlabel("birth (loss)")
    ax.set_ylabel("death (loss)")
    ax.grid(alpha=0.3)
    if legend and diagrams:
        ax.legend(fontsize="small", loc="lower right")


def plot_persistence_diagram(
    diagrams: Mapping[int, Any],
    *,
    cap: float | None = None,
    title: str | None = "Persistence diagram",
    figsize: tuple[float, float] = (4.5, 4.5),
) -> Figure:
    """Birth against death for every class, one colour per homology dimension.

    Args:
        diagrams: ``{dim: (n, 2) (birth, death)}``; infinite deaths are drawn as triangles on
            a dashed "∞" line above every finite value.
        cap: a value the axes must reach (e.g. the largest loss), optional.
        title: axes title (None for none).
        figsize: figure size in inches.
    """
    dgms = {int(k): _diagram(v) for k, v in diagrams.items()}
    low, _, inf_y = _extent(list(dgms.values()), cap)
    fig, ax = plt.subplots(figsize=figsize)
    _draw_diagram(ax, dgms, low, inf_y)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_barcode(
    diagrams: Mapping[int, Any],
    *,
    cap: float | None = None,
    title: str | None = "Barcode",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One panel per homology dimension, one horizontal bar per class, sorted by birth.

    Args:
        diagrams: ``{dim: (n, 2) (birth, death)}``; infinite bars run to a dashed "∞" line and
            end in an arrow.
        cap: a value the axis must reach (e.g. the largest loss), optional.
        title: figure title (None for none).
        figsize: figure size in inches; default grows with the number of dimensions.
    """
    dgms = {int(k): _diagram(v) for k, v in diagrams.items()}
    dims = sorted(dgms) or [0]
    low, _, inf_y = _extent(list(dgms.values()), cap)
    margin = 0.05 * (inf_y - low if inf_y > low else 1.0)
    fig, axes = plt.subplots(
        len(dims), 1, figsize=figsize or (6.0, 2.2 * len(dims)), sharex=True, squeeze=False
    )
    for ax, dim in zip(axes[:, 0], dims, strict=True):
        d = dgms.get(dim, np.empty((0, 2)))
        d = d[np.lexsort((d[:, 1], d[:, 0]))]
        inf = np.isinf(d[:, 1])
        ends = np.where(inf, inf_y, d[:, 1])
        rows = np.arange(d.shape[0])
        ax.hlines(rows, d[:, 0], ends, color=f"C{dim}", linewidth=2)
        if inf.any():
            ax.scatter(ends[inf], rows[inf], marker=">", s=25, color=f"C{dim}")
        ax.axvline(inf_y, color="0.5", linestyle="--", linewidth=1)
        ax.set_ylabel(f"H{dim} ({d.shape[0]})")
        ax.set_yticks([])
        ax.set_ylim(-1, max(d.shape[0], 1))
        ax.grid(alpha=0.3, axis="x")
    axes[0, 0].set_xlim(low - margin, inf_y + margin)
    axes[-1, 0].set_xlabel("loss (filtration value); dashed line = ∞")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_topology_comparison(
    diagrams: Mapping[str, Mapping[int, Any]],
    *,
    summaries: Mapping[str, Mapping[str, float]] | None = None,
    keys: Sequence[str] | None = None,
    cap: float | None = None,
    title: str | None = "Loss-landscape topology compared",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Networks' persistence diagrams side by side on one scale, and their summaries as bars.

    Args:
        diagrams: network name -> ``{dim: (n, 2) diagram}`` (two for B4, any number works).
        summaries: network name -> :func:`~lossatlas.analysis.persistence_summary` dict;
            when given, a second row draws one small bar chart per key.
        keys: summary keys to draw; default every ``h{d}_total_persistence``,
            ``h{d}_entropy`` and ``h{d}_n_features`` present.
        cap: a value every diagram axis must reach (e.g. the larger of the two max losses).
        title: figure title (None for none).
        figsize: figure size in inches; default grows with the number of panels.
    """
    names = list(diagrams)
    parsed = {n: {int(k): _diagram(v) for k, v in diagrams[n].items()} for n in names}
    low, _, inf_y = _extent([d for dg in parsed.values() for d in dg.values()], cap)
    if summaries and keys is None:
        first = next(iter(summaries.values()))
        keys = [k for k in first if any(k.endswith(f"_{s}") for s in _DEFAULT_KEYS)]
    keys = list(keys or []) if summaries else []

    width = 4.0 * max(len(names), 0.6 * len(keys), 1) + 0.5
    # constrained layout: tight_layout does not handle subfigures
    fig = plt.figure(figsize=figsize or (width, 6.6 if keys else 4.0), layout="constrained")
    if keys:
        top, bottom = fig.subfigures(2, 1, height_ratios=[3, 2])  # type: ignore[misc]  # an array of two
    else:
        top, bottom = fig, None
    d_axes = top.subplots(1, len(names), squeeze=False)[0]
    for i, (ax, name) in enumerate(zip(d_axes, names, strict=True)):
        _draw_diagram(ax, parsed[name], low, inf_y, legend=i == 0)
        ax.set_title(name)
    if bottom is not None and summaries is not None:
        s_axes = bottom.subplots(1, len(keys), squeeze=False)[0]
        for ax, key in zip(s_axes, keys, strict=True):
            values = [float(summaries[n].get(key, np.nan)) for n in names]
            ax.bar(range(len(names)), values, color=[f"C{i + 2}" for i in range(len(names))])
            ax.set_xticks(range(len(names)), names, fontsize="small")
            ax.set_title(key, fontsize="small")
            ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    return fig
