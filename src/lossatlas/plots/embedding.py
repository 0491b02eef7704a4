"""Embedding figures (PAPERS B2): one panel per method, coloured by loss, jump size or seed.

These only draw what :mod:`lossatlas.analysis.embedding` computed: ``embeddings`` is the
``{method: (S, 2)}`` dict from ``embed_all`` and ``scores`` the dict from
``score_embeddings``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# The package __init__ imports _render first, which selects the headless Agg backend.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

__all__ = ["plot_embedding_grid", "plot_embedding_interactive", "plot_embedding_scores"]

METHOD_NAMES = {
    "phate": "PHATE",
    "pca": "PCA",
    "tsne": "t-SNE",
    "umap": "UMAP",
    "random_plane": "random plane (Li et al.)",
}


def _name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _categories(values: np.ndarray) -> list[Any]:
    return sorted(np.unique(values).tolist())


def _paths(trajectory_ids: Any, order: Any, n: int) -> list[np.ndarray]:
    """Sample indices of each trajectory in ``order``, to draw the path through them."""
    if order is None:
        return []
    ids = np.zeros(n, dtype=int) if trajectory_ids is None else np.asarray(trajectory_ids)
    steps = np.asarray(order)
    paths = []
    for label in np.unique(ids):
        members = np.flatnonzero(ids == label)
        paths.append(members[np.argsort(steps[members], kind="stable")])
    return paths


def plot_embedding_grid(
    embeddings: Mapping[str, Any],
    values: Any,
    *,
    label: str = "test loss",
    categorical: bool = False,
    log: bool = False,
    trajectory_ids: Any = None,
    order: Any = None,
    ncols: int = 3,
    cmap: str | None = None,
    point_size: float = 10.0,
    title: str | None = None,
    panel_size: tuple[float, float] = (3.6, 3.2),
) -> Figure:
    """A grid of embeddings, one panel per method, all coloured by the same per-sample values.

    Use it three times for the paper's figures: ``values=loss`` (continuous, ``log=True`` for
    losses spanning decades), ``values=jump_size`` and ``values=seed`` (``categorical=True``).

    Args:
        embeddings: method -> ``(S, 2)`` coordinates.
        values: ``(S,)`` colour values (loss, jump size, seed, ...).
        label: what ``values`` are, for the colour bar or legend.
        categorical: one colour per distinct value with a legend, instead of a colour map.
        log: logarithmic colour scale (continuous, positive values only).
        trajectory_ids, order: ``(S,)``; when ``order`` is given each trajectory is joined by
            a thin grey line in that order, so the direction of retraining can be read.
        ncols: panels per row.
        cmap: colour map (default viridis, or tab10/tab20 when categorical).
        point_size: marker area.
        title: figure title (None for none).
        panel_size: inches per panel.
    """
    methods = list(embeddings)
    values = np.asarray(values)
    n_samples = values.shape[0]
    ncols = max(1, min(ncols, len(methods)))
    nrows = max(1, math.ceil(len(methods) / ncols))
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel_size[0] * ncols + (0.8 if not categorical else 0.0), panel_size[1] * nrows),
        squeeze=False,
    )
    paths = _paths(trajectory_ids, order, n_samples)
    if categorical:
        cats = _categories(values)
        palette = plt.get_cmap(cmap or ("tab10" if len(cats) <= 10 else "tab20"))
        colours = {c: palette(i % palette.N) for i, c in enumerate(cats)}
        norm: Normalize | None = None
    else:
        floats = values.astype(float)
        finite = floats[np.isfinite(floats)]
        if log and finite.size and finite.min() > 0:
            norm = LogNorm(vmin=finite.min(), vmax=finite.max())
        else:
            lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
            norm = Normalize(vmin=lo, vmax=hi)
    mappable = None
    for ax, method in zip(axes.ravel(), methods, strict=False):
        coords = np.asarray(embeddings[method], dtype=float)
        for path in paths:
            ax.plot(coords[path, 0], coords[path, 1], color="0.75", linewidth=0.6, zorder=1)
        if categorical:
            for cat in cats:
                mask = values == cat
                ax.scatter(
                    coords[mask, 0],
                    coords[mask, 1],
                    s=point_size,
                    color=colours[cat],
                    label=str(cat),
                    zorder=2,
                    linewidths=0,
                )
        else:
            mappable = ax.scatter(
                coords[:, 0],
                coords[:, 1],
                c=values.astype(float),
                cmap=cmap or "viridis",
                norm=norm,
                s=point_size,
                zorder=2,
                linewidths=0,
            )
        ax.set_title(_name(method))
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(methods) :]:
        ax.set_visible(False)
    if categorical and methods:
        handles, labels = axes.ravel()[0].get_legend_handles_labels()
        fig.legend(handles, labels, title=label, loc="center right", fontsize="small")
        fig.tight_layout(rect=(0.0, 0.0, 0.88, 0.95 if title else 1.0))
    else:
        fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95 if title else 1.0))
        if mappable is not None:
            fig.colorbar(mappable, ax=axes.ravel().tolist(), label=label, shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


def plot_embedding_interactive(
    embedding: Any,
    *,
    hover: Mapping[str, Any],
    color: str | None = None,
    categorical: bool | None = None,
    method: str = "",
    trajectory_ids: Any = None,
    order: Any = None,
    title: str | None = None,
) -> Any:
    """Interactive plotly scatter of one embedding, with per-sample fields on hover.

    Args:
        embedding: ``(S, 2)`` coordinates.
        hover: field name -> ``(S,)`` values shown on hover, e.g. ``{"jump size": ...,
            "seed": ..., "epoch": ..., "test loss": ...}``.
        color: the ``hover`` field that colours the points (default: the last one).
        categorical: colour by category with a legend (default: for integer and string
            fields with at most 20 distinct values).
        method: method name for the title (``"phate"`` reads as PHATE).
        trajectory_ids, order: ``(S,)``; when ``order`` is given trajectories are drawn as
            thin lines under the points.
        title: figure title (default: the method's name).

    Returns:
        a ``plotly.graph_objects.Figure`` (save with ``lossatlas.plots.plotly_to_html``).
    """
    import plotly.graph_objects as go

    coords = np.asarray(embedding, dtype=float)
    fields = {name: np.asarray(vals) for name, vals in hover.items()}
    names = list(fields)
    color = color if color is not None else (names[-1] if names else None)
    custom = np.stack([fields[n].astype(object) for n in names], axis=1) if names else None
    template = "<br>".join(
        [f"{n}: %{{customdata[{i}]}}" for i, n in enumerate(names)] + ["x: %{x:.3g}", "y: %{y:.3g}"]
    )
    fig = go.Figure()
    for path in _paths(trajectory_ids, order, coords.shape[0]):
        fig.add_trace(
            go.Scatter(
                x=coords[path, 0],
                y=coords[path, 1],
                mode="lines",
                line={"color": "rgba(150,150,150,0.5)", "width": 1},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    values = fields.get(color) if color is not None else None
    if categorical is None and values is not None:
        categorical = values.dtype.kind in "iubUSO" and np.unique(values).size <= 20
    if values is not None and categorical:
        for cat in _categories(values):
            mask = values == cat
            fig.add_trace(
                go.Scatter(
                    x=coords[mask, 0],
                    y=coords[mask, 1],
                    mode="markers",
                    name=f"{color}={cat}",
                    customdata=custom[mask] if custom is not None else None,
                    hovertemplate=template + "<extra></extra>",
                    marker={"size": 6},
                )
            )
    else:
        marker: dict[str, Any] = {"size": 6}
        if values is not None:
            marker.update(
                color=values.astype(float), colorscale="Viridis", colorbar={"title": color}
            )
        fig.add_trace(
            go.Scatter(
                x=coords[:, 0],
                y=coords[:, 1],
                mode="markers",
                customdata=custom,
                hovertemplate=template + "<extra></extra>",
                marker=marker,
                showlegend=False,
            )
        )
    fig.update_layout(
        title=title if title is not None else _name(method),
        xaxis={"showticklabels": False, "title": None},
        yaxis={"showticklabels": False, "title": None, "scaleanchor": "x"},
        template="plotly_white",
        legend={"title": {"text": color or ""}},
    )
    return fig


def plot_embedding_scores(
    scores: Mapping[str, Mapping[str, float]],
    *,
    title: str | None = "Embedding quality per method",
    figsize: tuple[float, float] = (8.0, 3.8),
) -> Figure:
    """Grouped bars: one group per method, one bar per score (trustworthiness, ...).

    Args:
        scores: method -> {score name -> value}, as returned by ``score_embeddings``.
            Missing or NaN values leave a gap.
        title: axes title (None for none).
        figsize: figure size in inches.
    """
    methods = list(scores)
    metrics: list[str] = []
    for row in scores.values():
        metrics.extend(m for m in row if m not in metrics)
    fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / max(1, len(metrics))
    x = np.arange(len(methods))
    lowest = 0.0
    for j, metric in enumerate(metrics):
        heights = np.array([scores[m].get(metric, np.nan) for m in methods], dtype=float)
        finite = np.isfinite(heights)
        if finite.any():
            lowest = min(lowest, float(heights[finite].min()))
        bars = ax.bar(
            x[finite] + (j - (len(metrics) - 1) / 2) * width,
            heights[finite],
            width,
            label=metric.replace("_", " "),
        )
        ax.bar_label(bars, fmt="%.2f", fontsize="x-small", padding=1)
    ax.set_xticks(x, [_name(m) for m in methods], rotation=15)
    ax.set_ylim(min(0.0, lowest - 0.05), 1.12)
    ax.axhline(0.0, color="0.3", linewidth=0.6)
    ax.set_ylabel("score (1 is best)")
    if title:
        ax.set_title(title)
    # Outside the axes: bars reach 1, so any inside corner would hide some.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
