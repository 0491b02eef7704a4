"""Tunnel and m-connector figures (paper A3, A5).

These only draw what :mod:`lossatlas.probes.paths` measured: every function takes arrays
(tensors or numpy) and returns a matplotlib figure; turn it into PNG bytes with
:func:`lossatlas.plots.figure_to_png`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# The package __init__ imports _render first, which selects the headless Agg backend.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_connector_losses",
    "plot_deviation_cosines",
    "plot_disagreement",
    "plot_loss_vs_optima",
    "plot_tunnel_path",
]

ArrayLike = Any  # a tensor, numpy array or sequence of floats


def _arr(values: ArrayLike) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _mark_nodes(ax: Any, node_t: ArrayLike | None) -> None:
    if node_t is None:
        return
    for t in _arr(node_t)[1:-1]:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)


def plot_tunnel_path(
    path_t: ArrayLike,
    loss_line: ArrayLike,
    loss_tunnel: ArrayLike,
    *,
    acc_line: ArrayLike | None = None,
    acc_tunnel: ArrayLike | None = None,
    node_t: ArrayLike | None = None,
    loss_joint: ArrayLike | None = None,
    split: str = "train",
    title: str | None = "Straight path vs tunnel",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Loss (and accuracy, when given) along the straight path and the tunnel.

    Args:
        path_t: ``(P,)`` positions in [0, 1] (``Tunnel.path_t``).
        loss_line, loss_tunnel: ``(P,)`` (``Tunnel.loss_line[split]`` ...).
        acc_line, acc_tunnel: ``(P,)`` optional; adds a second panel.
        node_t: ``(k + 2,)`` node positions (``Tunnel.node_t``); split points are marked.
        loss_joint: ``(P,)`` optional: the jointly optimised path (``Tunnel.loss_joint``).
        split: named in the axis labels.
    """
    t = _arr(path_t)
    with_acc = acc_line is not None and acc_tunnel is not None
    panels = 2 if with_acc else 1
    fig, axes = plt.subplots(1, panels, figsize=figsize or (5.0 * panels, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.plot(t, _arr(loss_line), color="tab:red", label="straight line")
    ax.plot(t, _arr(loss_tunnel), color="tab:blue", label="tunnel (paper's recipe)")
    if loss_joint is not None:
        ax.plot(t, _arr(loss_joint), color="tab:green", linestyle="--", label="joint path")
    _mark_nodes(ax, node_t)
    ax.set_xlabel("position t along the path")
    ax.set_ylabel(f"{split} loss")
    ax.legend(frameon=False)
    if with_acc:
        ax2 = axes[0, 1]
        ax2.plot(t, _arr(acc_line), color="tab:red", label="straight line")
        ax2.plot(t, _arr(acc_tunnel), color="tab:blue", label="tunnel")
        _mark_nodes(ax2, node_t)
        ax2.set_xlabel("position t along the path")
        ax2.set_ylabel(f"{split} accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_deviation_cosines(
    cosines: ArrayLike,
    *,
    split_at: int | None = None,
    title: str | None = "Cosine between tunnel deviations",
    figsize: tuple[float, float] = (4.8, 4.2),
) -> Figure:
    """Heatmap of the ``(k, k)`` deviation cosines, with the two blocks outlined.

    Args:
        cosines: ``(k, k)`` (``Tunnel.cosines``).
        split_at: size of the first block (default ``ceil(k / 2)``, as in ``Tunnel.blocks``).
    """
    c = _arr(cosines)
    k = c.shape[0]
    half = math.ceil(k / 2) if split_at is None else split_at
    fig, ax = plt.subplots(figsize=figsize)
    image = ax.imshow(c, cmap="RdBu_r", vmin=-1.0, vmax=1.0, origin="upper")
    fig.colorbar(image, ax=ax, label="cosine")
    if 0 < half < k:
        for lo, size in ((0, half), (half, k - half)):
            ax.add_patch(
                plt.Rectangle((lo - 0.5, lo - 0.5), size, size, fill=False, edgecolor="k", lw=1.2)
            )
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("split point")
    ax.set_ylabel("split point")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_disagreement(
    path_t: ArrayLike,
    a_line: ArrayLike,
    b_line: ArrayLike,
    a_tunnel: ArrayLike,
    b_tunnel: ArrayLike,
    *,
    node_t: ArrayLike | None = None,
    split: str = "test",
    title: str | None = "Label disagreement with the endpoints",
    figsize: tuple[float, float] = (5.5, 3.6),
) -> Figure:
    """Fraction of labels that differ from endpoint a / b along the line and the tunnel.

    Args:
        path_t: ``(P,)``; the other arrays ``(P,)`` (``Tunnel.disagreement_*``).
        node_t: optional node positions to mark.
        split: named in the axis label.
    """
    t = _arr(path_t)
    fig, ax = plt.subplots(figsize=figsize)
    ax.plot(t, _arr(a_line), color="tab:red", ls="--", label="line vs a")
    ax.plot(t, _arr(b_line), color="tab:red", ls=":", label="line vs b")
    ax.plot(t, _arr(a_tunnel), color="tab:blue", ls="--", label="tunnel vs a")
    ax.plot(t, _arr(b_tunnel), color="tab:blue", ls=":", label="tunnel vs b")
    _mark_nodes(ax, node_t)
    ax.set_xlabel("position t along the path")
    ax.set_ylabel(f"{split} labels that differ")
    ax.set_ylim(bottom=0.0)
    ax.legend(frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_connector_losses(
    loss_samples: ArrayLike,
    loss_optima: ArrayLike,
    loss_centroid: float | ArrayLike,
    *,
    loss_hull: ArrayLike | None = None,
    loss_middle: float | ArrayLike | None = None,
    metric: str = "train loss",
    title: str | None = "m-connector: samples vs optima",
    figsize: tuple[float, float] = (5.0, 3.8),
) -> Figure:
    """Distribution of a metric over samples on the connector, against the optima.

    Args:
        loss_samples: ``(S,)`` on the connector (``Connector.loss_samples[split]``).
        loss_optima: ``(m + 1,)``.
        loss_centroid: the straight (unoptimised) centroid.
        loss_hull: ``(S,)`` the same weights on the unoptimised hull (optional column).
        loss_middle: the optimised centroid ``c*`` (optional marker).
        metric: the y-axis label.

    Samples are drawn as a box plot with every value shown at evenly spread offsets (no
    random jitter, so the figure is deterministic).
    """
    columns = [("connector", _arr(loss_samples))]
    if loss_hull is not None:
        columns.insert(0, ("straight hull", _arr(loss_hull)))
    fig, ax = plt.subplots(figsize=figsize)
    positions = np.arange(len(columns), dtype=float)
    ax.boxplot(
        [values for _, values in columns],
        positions=positions,
        widths=0.5,
        showfliers=False,
        medianprops={"color": "k"},
    )
    for pos, (_, values) in zip(positions, columns, strict=True):
        offsets = np.linspace(-0.18, 0.18, values.size) if values.size > 1 else np.zeros(1)
        ax.scatter(pos + offsets, values, s=8, alpha=0.5, color="tab:blue")
    right = positions[-1] + 1.0
    optima = _arr(loss_optima)
    ax.scatter(np.full(optima.size, right), optima, marker="o", color="tab:green", label="optima")
    ax.scatter(
        [right],
        [float(_arr(loss_centroid))],
        marker="x",
        color="tab:red",
        s=50,
        label="straight centroid",
    )
    if loss_middle is not None:
        ax.scatter(
            [right],
            [float(_arr(loss_middle))],
            marker="*",
            color="tab:purple",
            s=80,
            label="optimised centroid",
        )
    ax.set_xticks([*positions, right], [name for name, _ in columns] + ["points"])
    ax.set_ylabel(metric)
    ax.legend(frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_loss_vs_optima(
    m: Sequence[int] | ArrayLike,
    series: Mapping[str, ArrayLike],
    *,
    spread: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    ylabel: str = "train loss",
    title: str | None = "Loss against the number of optima",
    figsize: tuple[float, float] = (5.0, 3.6),
) -> Figure:
    """One line per series against the number of optima ``m + 1``.

    Args:
        m: ``(M,)`` the ``m`` of each connector in the sweep.
        series: label -> ``(M,)`` values, e.g. ``{"connector samples (mean)": ...,
            "optima (mean)": ..., "straight centroid": ...}``.
        spread: label -> ``(lo (M,), hi (M,))`` band drawn around that series (e.g. quantiles
            of the sample losses).
        ylabel: the y-axis label.
    """
    n_optima = _arr(m) + 1
    fig, ax = plt.subplots(figsize=figsize)
    for label, values in series.items():
        (line,) = ax.plot(n_optima, _arr(values), marker="o", markersize=4, label=label)
        if spread and label in spread:
            lo, hi = spread[label]
            ax.fill_between(n_optima, _arr(lo), _arr(hi), color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("number of optima (m + 1)")
    ax.set_ylabel(ylabel)
    ax.set_xticks(n_optima)
    ax.legend(frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
