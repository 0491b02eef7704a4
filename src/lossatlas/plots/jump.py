"""Jump-and-retrain figures (PAPERS B1): loss, accuracy and distance from the optimum vs epoch.

Each jump is one line, coloured by its jump size (one legend entry per size), so the four rays'
trajectories of one size read as one colour. These only draw what
:mod:`lossatlas.populations.jump` measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

# The package __init__ imports _render first, which selects the headless Agg backend.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lossatlas.plots._render import as_array

__all__ = [
    "JumpCurves",
    "jump_figures",
    "plot_jump_accuracy",
    "plot_jump_distance",
    "plot_jump_loss",
]


class JumpCurves(Protocol):
    """What :func:`jump_figures` reads from a jump run (a ``JumpRun``): tensors or arrays."""

    # Read-only properties, so that frozen result records (dataclasses) qualify.
    @property
    def epoch(self) -> Any: ...  # (T,)

    @property
    def size(self) -> Any: ...  # (M,)

    @property
    def distance(self) -> Any: ...  # (M, T)

    @property
    def history(self) -> Mapping[str, Any]: ...  # "{split}_{loss,acc}" -> (M, T)


def _size_colors(size: np.ndarray) -> dict[float, Any]:
    """One colour per distinct jump size, ordered from small (light) to large (dark)."""
    distinct = sorted({float(s) for s in size})
    cmap = plt.get_cmap("viridis_r")
    if len(distinct) == 1:
        return {distinct[0]: cmap(0.6)}
    return {s: cmap(0.15 + 0.8 * i / (len(distinct) - 1)) for i, s in enumerate(distinct)}


def _draw_by_size(ax: Any, epoch: np.ndarray, values: np.ndarray, size: np.ndarray) -> None:
    """One line per jump (row of ``values`` (M, T)), coloured by its size; labels once per size."""
    colors = _size_colors(size)
    labelled: set[float] = set()
    for row, s in zip(values, size, strict=True):
        key = float(s)
        label = None if key in labelled else f"size {key:g}"
        labelled.add(key)
        ax.plot(epoch, row, color=colors[key], alpha=0.8, linewidth=1.2, label=label)


def _check(epoch: Any, values: Any, size: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    e, v, s = (np.asarray(epoch, dtype=float), np.asarray(values, dtype=float), np.asarray(size))
    if v.ndim != 2 or v.shape != (s.shape[0], e.shape[0]):
        raise ValueError(
            f"expected values (M, T) = ({s.shape[0]}, {e.shape[0]}), got {tuple(v.shape)}"
        )
    return e, v, s


def _panels(
    epoch: Any,
    curves: Mapping[str, Any],
    size: Any,
    *,
    ylabel: str,
    title: str | None,
    figsize: tuple[float, float] | None,
    logy: bool,
) -> Figure:
    """One panel per split (``curves``: split -> (M, T)), side by side, sharing the y axis."""
    if not curves:
        raise ValueError("no curves to draw")
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=figsize or (4.2 * n, 3.6), sharey=True, squeeze=False)
    for ax, (split, values) in zip(axes[0], curves.items(), strict=True):
        e, v, s = _check(epoch, values, size)
        _draw_by_size(ax, e, v, s)
        ax.set_title(split)
        ax.set_xlabel("epoch of retraining")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_jump_loss(
    epoch: Any,
    loss: Mapping[str, Any],
    size: Any,
    *,
    title: str | None = "Loss after the jump",
    figsize: tuple[float, float] | None = None,
    logy: bool = False,
) -> Figure:
    """Loss vs epoch for every jump, one panel per split (e.g. train and test).

    Args:
        epoch: ``(T,)`` epoch of each snapshot (0 = right after the jump).
        loss: split -> ``(M, T)`` loss of each jump at each snapshot.
        size: ``(M,)`` jump size of each jump (the line colour).
        title: figure title (None for none).
        figsize: figure size in inches (default: 4.2 x 3.6 per panel).
        logy: logarithmic loss axis.
    """
    return _panels(epoch, loss, size, ylabel="loss", title=title, figsize=figsize, logy=logy)


def plot_jump_accuracy(
    epoch: Any,
    accuracy: Mapping[str, Any],
    size: Any,
    *,
    title: str | None = "Accuracy after the jump",
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Accuracy vs epoch for every jump, one panel per split (arguments: see plot_jump_loss)."""
    return _panels(
        epoch, accuracy, size, ylabel="accuracy", title=title, figsize=figsize, logy=False
    )


def plot_jump_distance(
    epoch: Any,
    distance: Any,
    size: Any,
    *,
    title: str | None = "Distance from the optimum",
    figsize: tuple[float, float] = (5.5, 3.8),
) -> Figure:
    """L2 distance from the optimum vs epoch for every jump, coloured by jump size.

    Args:
        epoch: ``(T,)`` epoch of each snapshot.
        distance: ``(M, T)`` distance of each snapshot from the optimum.
        size: ``(M,)`` jump size of each jump.
        title: axes title (None for none).
        figsize: figure size in inches.
    """
    e, v, s = _check(epoch, distance, size)
    fig, ax = plt.subplots(figsize=figsize)
    _draw_by_size(ax, e, v, s)
    ax.set_xlabel("epoch of retraining")
    ax.set_ylabel(r"$\|\theta - \theta^*\|_2$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def jump_figures(run: JumpCurves, *, title: str | None = None) -> dict[str, Figure]:
    """The figures of a jump run: name -> matplotlib ``Figure`` (loss, distance, accuracy)."""
    epoch, size = as_array(run.epoch), as_array(run.size)

    def curves(metric: str) -> dict[str, np.ndarray]:
        return {
            split: as_array(run.history[f"{split}_{metric}"])
            for split in ("train", "val", "test")
            if f"{split}_{metric}" in run.history
        }

    return {
        "jump_loss": plot_jump_loss(epoch, curves("loss"), size, title=title),
        "jump_distance": plot_jump_distance(epoch, as_array(run.distance), size, title=title),
        "jump_accuracy": plot_jump_accuracy(epoch, curves("acc"), size, title=title),
    }
