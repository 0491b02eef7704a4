"""Snapshot-ensemble figures (PAPERS A7): accuracy, running ensembles and diversity vs LR_max.

These only draw what :mod:`lossatlas.studies.wedges.ensemble` measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The package __init__ imports _render first, which selects the headless Agg backend.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_ensemble_accuracy", "plot_ensemble_diversity", "plot_running_ensemble"]


def _finish(fig: Figure, ax: Any, title: str | None, *, legend: bool = True) -> Figure:
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_ensemble_accuracy(
    lr_max: Any,
    *,
    ensemble: Any,
    swa: Any,
    single_last: Any,
    single_mean: Any | None = None,
    baselines: Mapping[str, float] | None = None,
    title: str | None = "Snapshot ensemble vs SWA vs single snapshot",
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Test accuracy against LR_max (log axis) for the three ways of using the snapshots.

    Args:
        lr_max: ``(L,)`` peak learning rates.
        ensemble, swa, single_last: ``(L,)`` accuracies of the prediction ensemble, of the
            weight average, and of the last snapshot.
        single_mean: ``(L,)`` mean accuracy over the snapshots (dashed), optional.
        baselines: label -> accuracy of a baseline ensemble (independent runs, FGE), drawn as
            horizontal lines.
        title: axes title (None for none).
        figsize: figure size in inches.
    """
    lr = np.asarray(lr_max, dtype=float)
    fig, ax = plt.subplots(figsize=figsize)
    ax.plot(lr, np.asarray(ensemble, dtype=float), "o-", label="prediction ensemble")
    ax.plot(lr, np.asarray(swa, dtype=float), "s-", label="SWA (weight average)")
    ax.plot(lr, np.asarray(single_last, dtype=float), "^-", label="single (last snapshot)")
    if single_mean is not None:
        ax.plot(lr, np.asarray(single_mean, dtype=float), "^--", alpha=0.6, label="single (mean)")
    for i, (label, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, color=f"C{4 + i}", linestyle=":", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("LR_max")
    ax.set_ylabel("test accuracy")
    return _finish(fig, ax, title)


def plot_running_ensemble(
    running: Mapping[str, Any],
    *,
    title: str | None = "Ensemble accuracy vs number of members",
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Accuracy of the ensemble of the first ``s`` snapshots against ``s``, one line per run.

    Args:
        running: label (e.g. ``"cyclic LR_max=0.1"``, ``"FGE"``) -> ``(S,)`` accuracies, entry
            ``s - 1`` being the ensemble of the first ``s`` members.
        title: axes title (None for none).
        figsize: figure size in inches.
    """
    fig, ax = plt.subplots(figsize=figsize)
    for label, values in running.items():
        acc = np.asarray(values, dtype=float)
        ax.plot(np.arange(1, acc.size + 1), acc, marker="o", markersize=3, label=label)
    ax.set_xlabel("members in the ensemble")
    ax.set_ylabel("test accuracy")
    # AutoLocator's settings, restricted to integers.
    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True))
    return _finish(fig, ax, title, legend=bool(running))


def plot_ensemble_diversity(
    lr_max: Any,
    *,
    angle: Any,
    disagreement: Any,
    pairwise_angle: Any | None = None,
    pairwise_disagreement: Any | None = None,
    baselines: Mapping[str, tuple[float, float]] | None = None,
    title: str | None = "Diversity of the snapshots",
    figsize: tuple[float, float] = (9.0, 3.8),
) -> Figure:
    """Angle (left) and label disagreement (right) against LR_max (log axis).

    Args:
        lr_max: ``(L,)`` peak learning rates.
        angle, disagreement: ``(L,)`` means over successive snapshot pairs (degrees, fraction).
        pairwise_angle, pairwise_disagreement: ``(L,)`` means over all pairs (dashed),
            optional.
        baselines: label -> ``(pairwise angle, pairwise disagreement)`` of a baseline
            ensemble, drawn as horizontal lines.
        title: figure title (None for none).
        figsize: figure size in inches.
    """
    lr = np.asarray(lr_max, dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize)
    panels = (
        (left, angle, pairwise_angle, "angle between weight vectors (°)", 0),
        (right, disagreement, pairwise_disagreement, "label disagreement", 1),
    )
    for ax, successive, pairwise, ylabel, index in panels:
        ax.plot(lr, np.asarray(successive, dtype=float), "o-", label="successive snapshots")
        if pairwise is not None:
            ax.plot(lr, np.asarray(pairwise, dtype=float), "o--", alpha=0.6, label="all pairs")
        for i, (label, values) in enumerate((baselines or {}).items()):
            ax.axhline(values[index], color=f"C{4 + i}", linestyle=":", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("LR_max")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    left.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
