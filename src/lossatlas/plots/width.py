"""Tunnel-width figures: width against weight norm R, and the spread over directions.

These only draw what :mod:`lossatlas.probes.width` measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

# The package __init__ imports _render first, which selects the headless Agg backend.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lossatlas.plots._render import as_array

__all__ = ["WidthResult", "plot_width_distribution", "plot_width_vs_norm"]


class WidthResult(Protocol):
    """What :func:`plot_width_distribution` reads (a ``lossatlas.probes.width.TunnelWidth``)."""

    # Read-only properties, so that frozen result records (dataclasses) qualify.
    @property
    def distances(self) -> Any: ...  # (K,) tensor or array

    @property
    def censored_mask(self) -> Any: ...  # (K,) bool

    @property
    def max_distance(self) -> float: ...

    @property
    def mean(self) -> float: ...

    @property
    def threshold(self) -> float: ...

    @property
    def threshold_mode(self) -> str: ...

    @property
    def base_loss(self) -> float: ...

    @property
    def weight_norm(self) -> float: ...


def plot_width_vs_norm(
    results: Mapping[str, Mapping[str, Any]],
    *,
    show_std: bool = True,
    title: str | None = "Tunnel width against weight norm",
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Width against ``R`` for several runs (e.g. one per learning rate).

    Args:
        results: run label -> the dict returned by
            :func:`~lossatlas.probes.width.width_over_snapshots`; uses ``weight_norm`` (S,),
            ``width_mean`` (S,), optionally ``width_std`` (S,) and ``censored`` (S,).
        show_std: shade mean +- std over directions.
        title: axes title (None for none).
        figsize: figure size in inches.

    Snapshots where some rays were censored (their mean is only a lower bound) are drawn with
    hollow markers.
    """
    fig, ax = plt.subplots(figsize=figsize)
    any_censored = False
    for label, res in results.items():
        r = np.asarray(res["weight_norm"], dtype=float)
        mean = np.asarray(res["width_mean"], dtype=float)
        (line,) = ax.plot(r, mean, marker="o", markersize=3, label=label)
        if show_std and "width_std" in res:
            std = np.asarray(res["width_std"], dtype=float)
            ax.fill_between(r, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        if "censored" in res:
            hit = np.asarray(res["censored"]) > 0
            if hit.any():
                any_censored = True
                ax.plot(
                    r[hit],
                    mean[hit],
                    linestyle="none",
                    marker="o",
                    markersize=6,
                    markerfacecolor="white",
                    markeredgecolor=line.get_color(),
                )
    if any_censored:
        ax.plot([], [], "o", mfc="white", mec="grey", label="some rays censored (lower bound)")
    ax.set_xlabel("weight norm R = |θ|")
    ax.set_ylabel("tunnel width (mean distance)")
    if title:
        ax.set_title(title)
    if results:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_width_distribution(
    width: WidthResult,
    *,
    bins: int = 20,
    title: str | None = "Distance to threshold per direction",
    figsize: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Histogram of the per-direction distances; censored rays are a separate hatched bar.

    Args:
        width: a :class:`~lossatlas.probes.width.TunnelWidth`.
        bins: histogram bins.
        title: axes title (None for none).
        figsize: figure size in inches.
    """
    distances = as_array(width.distances, float)
    censored = as_array(width.censored_mask, bool)
    fig, ax = plt.subplots(figsize=figsize)
    # Shared bin edges so the two groups stack on one axis.
    edges = np.histogram_bin_edges(distances, bins=bins)
    if (~censored).any():
        ax.hist(distances[~censored], bins=list(edges), color="C0", alpha=0.8, label="crossed")
    if censored.any():
        ax.hist(
            distances[censored],
            bins=list(edges),
            color="C3",
            alpha=0.6,
            hatch="//",
            label=f"censored (≥ {width.max_distance:g}): {int(censored.sum())}",
        )
    bound = " (lower bound)" if censored.any() else ""  # censored rays count at max_distance
    ax.axvline(width.mean, color="k", linestyle="--", label=f"mean {width.mean:.3g}{bound}")
    ax.set_xlabel("distance |Δθ| to loss threshold")
    ax.set_ylabel("directions")
    if title:
        ax.set_title(title)
    # The run's settings go in the legend title, where they cannot cover the bars.
    ax.legend(
        fontsize="small",
        title_fontsize="small",
        loc="best",
        title=f"threshold {width.threshold:.4g} ({width.threshold_mode}), "
        f"base loss {width.base_loss:.4g}, R {width.weight_norm:.4g}",
    )
    fig.tight_layout()
    return fig
