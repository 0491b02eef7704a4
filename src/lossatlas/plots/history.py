"""Training-curve figures: the stored ``history`` arrays of a population, drawn."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["metric_order", "plot_training_curves"]

_CURVE_MEMBERS = 20  # up to this many members get a line each; more get median and band
_SPLIT_COLOURS = {"train": "C0", "val": "C1", "test": "C2"}


def plot_training_curves(history: Mapping[str, np.ndarray]) -> Figure:
    """Training curves: one panel per metric, one colour per split, one line per member.

    ``history`` maps ``"{split}_{metric}"`` to ``(members, epochs + 1)`` arrays (column 0 is
    before training). With more than 20 members the median and the 10-90 % band are drawn
    instead of one line each.
    """
    metrics: dict[str, dict[str, np.ndarray]] = {}
    for name, values in history.items():
        split, _, metric = name.partition("_")
        metrics.setdefault(metric or name, {})[split] = values
    fig = Figure(figsize=(4.6 * len(metrics), 3.4))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    panels = sorted(metrics.items(), key=lambda item: metric_order(f"train_{item[0]}"))
    for ax, (metric, splits) in zip(axes, panels, strict=True):
        ordered = sorted(splits.items(), key=lambda item: metric_order(f"{item[0]}_{metric}"))
        for i, (split, values) in enumerate(ordered):
            colour = _SPLIT_COLOURS.get(split, f"C{3 + i}")  # a split keeps its colour
            epochs = np.arange(values.shape[1])
            if values.shape[0] <= _CURVE_MEMBERS:
                for k, row in enumerate(values):
                    ax.plot(
                        epochs,
                        row,
                        color=colour,
                        lw=1.2,
                        alpha=0.7,
                        label=split if k == 0 else None,
                    )
            else:
                with warnings.catch_warnings():  # all-NaN epochs (diverged members) draw as gaps
                    warnings.simplefilter("ignore", RuntimeWarning)
                    low, mid, high = np.nanpercentile(values, [10, 50, 90], axis=0)
                ax.fill_between(epochs, low, high, color=colour, alpha=0.2, lw=0)
                ax.plot(epochs, mid, color=colour, lw=1.5, label=f"{split} (median, 10–90 %)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel({"acc": "accuracy"}.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def metric_order(name: str) -> tuple[int, int, str]:
    """Sort ``{split}_{metric}`` names as train, val, test and loss before accuracy."""
    split, _, metric = name.partition("_")
    splits = {"train": 0, "val": 1, "test": 2}
    return (splits.get(split, 9), 0 if metric == "loss" else 1, name)
