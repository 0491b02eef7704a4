"""Small figures of the wedge study that no probe module owns. They only draw."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_counts", "plot_norm_growth"]


def plot_norm_growth(
    epochs: Sequence[int], norms: Sequence[float], *, title: str = "Weight norm during training"
) -> Figure:
    """Mean weight norm ``R`` (one value per cut) against the epoch."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    ax.plot(list(epochs), list(norms), marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean |θ|")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_counts(
    counts: Mapping[str, Mapping[str, float]], *, title: str = "Eigenvalues above threshold"
) -> Figure:
    """Grouped bars: for each setting (e.g. a point on a path), the count at each threshold.

    Args:
        counts: setting label -> {threshold label -> count}.
    """
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    labels = list(counts)
    thresholds = list(next(iter(counts.values()), {}))
    width = 0.8 / max(len(thresholds), 1)
    x = np.arange(len(labels))
    for i, threshold in enumerate(thresholds):
        values = [counts[label].get(threshold, np.nan) for label in labels]
        ax.bar(x + i * width, values, width, label=f"> {threshold}")
    ax.set_xticks(x + width * (len(thresholds) - 1) / 2, labels, rotation=20)
    ax.set_ylabel("count")
    ax.set_yscale("symlog")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
