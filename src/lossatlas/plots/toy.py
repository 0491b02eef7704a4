"""Figures of the toy n-wedge experiments (:mod:`lossatlas.studies.wedges.toy`).

These only draw what the experiments measured: arrays in, figures out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The package __init__ imports _render first, which selects the headless Agg backend.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

__all__ = [
    "plot_cosine_matrix",
    "plot_hyperplane_threshold",
    "plot_radial_rates",
    "plot_tunnel_loss",
    "plot_wedge_slice",
    "plotly_hyperplane_threshold",
]


def plot_hyperplane_threshold(
    d: np.ndarray,
    success_rate: np.ndarray,
    *,
    n_thin: int,
    d_lim: int | None = None,
    variants: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    figsize: tuple[float, float] = (10.0, 4.0),
) -> Figure:
    """Success rate of random-hyperplane optimisation against the plane's dimension ``d``.

    Args:
        d: (K,) hyperplane dimensions.
        success_rate: (K,) fraction of trials that reached the wedges.
        n_thin: ``D - n``, drawn as the predicted threshold.
        d_lim: the measured threshold (smallest ``d`` with rate >= 0.5), marked if given.
        variants: label -> ``(d - (D - n), success_rate)`` per landscape; drawn in a second
            panel on the shifted axis, where every landscape's predicted threshold is 0.
        figsize: figure size in inches.
    """
    panels = 2 if variants else 1
    fig, axes = plt.subplots(1, panels, figsize=figsize if panels == 2 else (5.5, 4.0))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ax.plot(d, success_rate, marker="o", color="C0", label="success rate")
    ax.axvline(n_thin, color="k", linestyle="--", label=f"D − n = {n_thin}")
    if d_lim is not None and d_lim > 0:
        ax.axvline(d_lim, color="C3", linestyle=":", label=f"measured d_lim = {d_lim}")
    ax.axhline(0.5, color="grey", linewidth=0.8, alpha=0.6)
    ax.set_xlabel("hyperplane dimension d")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Optimisation on random d-planes")
    ax.legend(fontsize="small", loc="upper left")
    ax.grid(alpha=0.3)
    if variants:
        ax = axes[1]
        for label, (offset, rate) in variants.items():
            ax.plot(offset, rate, marker="o", markersize=3, label=label)
        ax.axvline(0, color="k", linestyle="--", label="d = D − n")
        ax.axhline(0.5, color="grey", linewidth=0.8, alpha=0.6)
        ax.set_xlabel("d − (D − n)")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title("Threshold across landscapes")
        ax.legend(fontsize="x-small", loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plotly_hyperplane_threshold(variants: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Any:
    """Interactive success rate against ``d − (D − n)``, one trace per landscape."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, (offset, rate) in variants.items():
        fig.add_trace(
            go.Scatter(
                x=np.asarray(offset).tolist(),
                y=np.asarray(rate).tolist(),
                mode="lines+markers",
                name=label,
            )
        )
    fig.add_vline(x=0, line_dash="dash", annotation_text="d = D − n")
    fig.update_layout(
        title="Random-hyperplane success rate",
        xaxis_title="d − (D − n)",
        yaxis_title="success rate",
        yaxis_range=[-0.05, 1.05],
    )
    return fig


def plot_tunnel_loss(
    position: np.ndarray,
    straight_loss: np.ndarray,
    tunnel_loss: np.ndarray,
    *,
    split_position: np.ndarray | None = None,
    split_loss: np.ndarray | None = None,
    joint_loss: np.ndarray | None = None,
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Loss along the straight segment and along the tunnel, against position ``t`` on ``u``.

    Args:
        position: (S,) positions in ``[0, 1]``.
        straight_loss: (S,) or (T, S): one row per pair; the first is drawn bold, others faint.
        tunnel_loss: same shape as ``straight_loss``.
        split_position: (k,) positions of the optimised split points.
        split_loss: (k,) or (T, k) their losses (first row drawn as markers).
        joint_loss: optional, same shape as ``tunnel_loss``: the jointly optimised path (first
            row drawn dashed).
        figsize: figure size in inches.
    """
    straight = np.atleast_2d(straight_loss)
    tunnel = np.atleast_2d(tunnel_loss)
    fig, ax = plt.subplots(figsize=figsize)
    for row in range(1, straight.shape[0]):
        ax.plot(position, straight[row], color="C3", alpha=0.2, linewidth=0.8)
        ax.plot(position, tunnel[row], color="C0", alpha=0.2, linewidth=0.8)
    ax.plot(position, straight[0], color="C3", label="straight line")
    ax.plot(position, tunnel[0], color="C0", label="tunnel (paper's recipe)")
    if joint_loss is not None:
        ax.plot(
            position, np.atleast_2d(joint_loss)[0], color="C2", linestyle="--", label="joint path"
        )
    if split_position is not None and split_loss is not None:
        ax.plot(
            split_position,
            np.atleast_2d(split_loss)[0],
            linestyle="none",
            marker="o",
            color="C0",
            label="split points",
        )
    ax.set_xlabel("position along θ1 → θ2")
    ax.set_ylabel("loss (distance to nearest wedge)")
    ax.set_title("Straight path vs tunnel")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_cosine_matrix(
    cos: np.ndarray,
    *,
    title: str = "Cosine between deviation vectors",
    figsize: tuple[float, float] = (4.8, 4.0),
) -> Figure:
    """Heatmap of the (k, k) cosine matrix between split-point deviations."""
    cos = np.asarray(cos)
    fig, ax = plt.subplots(figsize=figsize)
    image = ax.imshow(cos, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    k = cos.shape[0]
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xlabel("split point")
    ax.set_ylabel("split point")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=ax, label="cosine")
    fig.tight_layout()
    return fig


def plot_radial_rates(
    rates: np.ndarray,
    axis_rates: np.ndarray | None = None,
    *,
    predicted_mean: float | None = None,
    bins: int = 30,
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Distribution of the initial rate of loss rise along random directions.

    Args:
        rates: rates along random unit directions (any shape; flattened).
        axis_rates: rates along the wedge frame's own axes, drawn as a second histogram.
        predicted_mean: analytic mean rate (ε = 0, equal widths), drawn as a line.
        bins: histogram bins.
        figsize: figure size in inches.
    """
    rates = np.ravel(rates)
    fig, ax = plt.subplots(figsize=figsize)
    upper = max(float(rates.max()), float(np.max(axis_rates)) if axis_rates is not None else 0.0)
    edges = np.linspace(0.0, upper * 1.05 + 1e-12, bins + 1)
    cv = rates.std() / rates.mean() if rates.mean() > 0 else float("nan")
    ax.hist(
        rates,
        bins=list(edges),
        density=True,
        alpha=0.7,
        color="C0",
        label=f"random directions (cv {cv:.2f})",
    )
    if axis_rates is not None:
        axis_rates = np.ravel(axis_rates)
        axis_cv = axis_rates.std() / axis_rates.mean() if axis_rates.mean() > 0 else float("nan")
        ax.hist(
            axis_rates,
            bins=list(edges),
            density=True,
            alpha=0.5,
            color="C1",
            label=f"wedge axes (cv {axis_cv:.2f})",
        )
    ax.axvline(rates.mean(), color="C0", linestyle="--", label="mean (a round hole: all here)")
    if predicted_mean is not None:
        ax.axvline(predicted_mean, color="k", linestyle=":", label="predicted mean")
    ax.set_xlabel("initial rate of loss rise (loss / step)")
    ax.set_ylabel("density")
    ax.set_title("Radial probe from a point on a wedge")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_wedge_slice(
    a: np.ndarray,
    b: np.ndarray,
    loss: np.ndarray,
    *,
    endpoints: np.ndarray | None = None,
    path: np.ndarray | None = None,
    figsize: tuple[float, float] = (5.0, 4.4),
) -> Figure:
    """Loss on a 2-D cut through the origin (e.g. spanned by two optima).

    Args:
        a: (Ga,) coordinates along the first in-plane axis.
        b: (Gb,) coordinates along the second.
        loss: (Gb, Ga) loss on the grid (rows follow ``b``).
        endpoints: (2, 2) in-plane coordinates of the two optima; the straight line joins them.
        path: (m, 2) in-plane projection of the tunnel (it leaves the plane: drawn dashed).
        figsize: figure size in inches.
    """
    loss = np.asarray(loss)
    fig, ax = plt.subplots(figsize=figsize)
    positive = loss[loss > 0]
    floor = float(positive.min()) if positive.size else 1e-12
    floor = max(floor, float(loss.max()) * 1e-4)
    image = ax.pcolormesh(
        a,
        b,
        np.maximum(loss, floor),
        shading="auto",
        cmap="viridis",
        norm=LogNorm(vmin=floor, vmax=max(float(loss.max()), floor * 10)),
    )
    fig.colorbar(image, ax=ax, label="loss (log scale)")
    if endpoints is not None:
        ax.plot(endpoints[:, 0], endpoints[:, 1], color="w", linewidth=1.2, label="straight line")
        ax.plot(endpoints[:, 0], endpoints[:, 1], "o", color="C3", markersize=6, label="optima")
    if path is not None:
        ax.plot(path[:, 0], path[:, 1], "--", color="C1", linewidth=1.2, label="tunnel (projected)")
    ax.plot([0], [0], "+", color="w", markersize=8)
    ax.set_xlabel("along θ1")
    ax.set_ylabel("along θ2 (orthogonalised)")
    ax.set_title("Slice through the origin spanned by two optima", fontsize="medium")
    ax.set_aspect("equal")
    if endpoints is not None or path is not None:
        ax.legend(fontsize="x-small", loc="lower left")
    fig.tight_layout()
    return fig
