"""The paper's numbers beside ours, on matching axes, clearly marked as another setup.

Every function takes plain dicts (the paper's table, as a claim's ``paper_value`` holds it, and
our measurement of the same quantity) and returns a matplotlib figure; nothing is computed.
Ours are solid lines with filled markers (error bars where given); the paper's are dashed lines
with hollow markers in the same colour, and a footnote names both setups.

Two kinds of x axis:
- ``"shared"``: both sides vary the same quantity on the same scale (number of optima, position
  on a tunnel), so they share the axis.
- ``"rank"``: both sides sweep a setting over different values (our SGD learning rates against
  the paper's Adam ones), so each value is drawn at its rank and the tick shows ours over the
  paper's.

A paper value may be a number or a ``(low, high)`` range (``"280-300"`` in the paper's table):
a range is drawn as its midpoint with a bar spanning it.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "Panel",
    "plot_beside_paper",
    "plot_connector_short_dirs_beside_paper",
    "plot_ensemble_beside_paper",
    "plot_short_dirs_beside_paper",
    "plot_tunnel_short_dirs_beside_paper",
    "plot_widths_beside_paper",
]

Table = Mapping[str, Mapping[Any, Any]]
"""curve label -> {x: y}; a paper ``y`` may be a ``(low, high)`` range."""

_OURS_STYLE: dict[str, Any] = {"linestyle": "-", "linewidth": 1.8}
_PAPER_STYLE: dict[str, Any] = {
    "linestyle": "--",
    "linewidth": 1.3,
    "markerfacecolor": "white",
    "alpha": 0.9,
}


@dataclass(frozen=True)
class Panel:
    """One axes of a :func:`plot_beside_paper` figure.

    Attributes:
        title: the axes title.
        ours: our curves, label -> {x: y}.
        paper: the paper's curves, label -> {x: y or (low, high)}; a label also in ``ours``
            gets the same colour.
        xlabel, ylabel: axis labels (the same quantity on both sides).
        x_axis: ``"shared"`` or ``"rank"`` (see the module docstring).
        log_y: a logarithmic y axis (counts that span decades).
        ours_err: label -> {x: half-width of our interval}, drawn as error bars.
    """

    title: str
    ours: Table
    paper: Table
    xlabel: str
    ylabel: str
    x_axis: Literal["shared", "rank"] = "shared"
    log_y: bool = False
    ours_err: Table = field(default_factory=dict)


def _number(value: Any) -> float | None:
    """``value`` as a float (``"4e-4"`` -> 0.0004), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _ordered(keys: Sequence[Any]) -> list[Any]:
    """Keys in numeric order when all are numbers, else in the order given."""
    if keys and all(_number(k) is not None for k in keys):
        return sorted(keys, key=lambda k: _number(k) or 0.0)
    return list(keys)


def _point(value: Any) -> tuple[float, float, float]:
    """``(y, below, above)``: a number has no bar; a ``(low, high)`` range its midpoint."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        low, high = (float(v) for v in value)
        mid = (low + high) / 2
        return mid, mid - low, high - mid
    y = _number(value)
    return (np.nan if y is None else y), 0.0, 0.0


def _label(value: Any) -> str:
    number = _number(value)
    if number is None or isinstance(value, str):
        return str(value)
    return f"{number:g}"


def _positions(panel: Panel) -> tuple[dict[Any, float], dict[Any, float], list[float], list[str]]:
    """Where each of our and the paper's x values goes, and the ticks: ``(ours, paper, ticks,
    tick labels)``."""
    our_keys = _ordered(list(dict.fromkeys(k for c in panel.ours.values() for k in c)))
    paper_keys = _ordered(list(dict.fromkeys(k for c in panel.paper.values() for k in c)))
    if panel.x_axis == "rank":
        ours = {k: float(i) for i, k in enumerate(our_keys)}
        paper = {k: float(i) for i, k in enumerate(paper_keys)}
        n = max(len(our_keys), len(paper_keys))
        labels = []
        for i in range(n):
            top = _label(our_keys[i]) if i < len(our_keys) else "–"
            bottom = _label(paper_keys[i]) if i < len(paper_keys) else "–"
            labels.append(f"{top}\n{bottom}")
        return ours, paper, [float(i) for i in range(n)], labels
    keys = _ordered(list(dict.fromkeys([*our_keys, *paper_keys])))
    if all(_number(k) is not None for k in keys):
        # 2 and "2" are the same setting: one tick per distinct value.
        where = {k: float(_number(k) or 0.0) for k in keys}
        ticks = sorted(set(where.values()))
        return where, where, ticks, [f"{t:g}" for t in ticks]
    where = {k: float(i) for i, k in enumerate(keys)}
    return where, where, [float(i) for i in range(len(keys))], [_label(k) for k in keys]


def _draw_panel(ax: Any, panel: Panel, colours: dict[str, str]) -> None:
    ours_at, paper_at, ticks, tick_labels = _positions(panel)
    for label, curve in panel.ours.items():
        keys = [k for k in _ordered(list(curve)) if k in ours_at]
        x = [ours_at[k] for k in keys]
        y = [_point(curve[k])[0] for k in keys]
        err = panel.ours_err.get(label, {})
        our_err = [float(err.get(k, 0.0)) for k in keys] if err else None
        ax.errorbar(x, y, yerr=our_err, marker="o", color=colours[label], capsize=3, **_OURS_STYLE)
    for label, curve in panel.paper.items():
        keys = [k for k in _ordered(list(curve)) if k in paper_at]
        points = [_point(curve[k]) for k in keys]
        x = [paper_at[k] for k in keys]
        y = [p[0] for p in points]
        bars = np.array([[p[1] for p in points], [p[2] for p in points]])
        yerr = bars if bars.size and bars.any() else None
        ax.errorbar(x, y, yerr=yerr, marker="s", color=colours[label], capsize=3, **_PAPER_STYLE)
    ax.set_xticks(ticks, tick_labels)
    xlabel = panel.xlabel + ("\n(ours above, paper below)" if panel.x_axis == "rank" else "")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.log_y:
        ax.set_yscale("log")
    ax.set_title(panel.title, fontsize="medium")
    ax.grid(alpha=0.3)


def plot_beside_paper(
    panels: Sequence[Panel],
    *,
    our_setup: str,
    paper_setup: str,
    title: str | None = None,
    panel_size: tuple[float, float] = (4.2, 3.4),
) -> Figure:
    """Panels of our curves beside the paper's, one legend, and a footnote naming both setups.

    Args:
        panels: the axes, left to right.
        our_setup: what we measured on (``"mnist1d MLP, SGD"``).
        paper_setup: what the paper measured on (``"CIFAR-10 SimpleCNN, Adam"``).
        title: the figure's title (None for none).
        panel_size: inches per panel.
    """
    if not panels:
        raise ValueError("plot_beside_paper needs at least one panel")
    labels = list(
        dict.fromkeys(label for p in panels for label in [*p.ours, *p.paper] if label != "")
    )
    colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    colours.setdefault("", "C0")
    width, height = panel_size
    legend_inches = 1.9  # a column right of the panels for the legend
    total_width = width * len(panels) + legend_inches
    note = (
        f"Solid, filled: ours ({our_setup}). Dashed, hollow: the paper ({paper_setup}), another "
        "setup, values read off its tables and plots: compare trends, not levels."
    )
    lines = textwrap.wrap(note, max(50, int(total_width * 13)))
    note_inches = 0.18 * len(lines) + 0.1
    title_inches = 0.35 if title else 0.0
    total_height = height + note_inches + title_inches
    fig, axes = plt.subplots(1, len(panels), figsize=(total_width, total_height))
    for ax, panel in zip(np.atleast_1d(axes), panels, strict=True):
        _draw_panel(ax, panel, colours)
    handles = [Line2D([], [], color=colours[label], linewidth=4, label=label) for label in labels]
    handles += [
        Line2D([], [], color="0.2", marker="o", label="ours", **_OURS_STYLE),
        Line2D([], [], color="0.2", marker="s", label="paper\n(another setup)", **_PAPER_STYLE),
    ]
    right = 1.0 - legend_inches / total_width
    fig.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(right + 0.01, 0.5),
        fontsize="small",
        frameon=False,
    )
    if title:
        fig.suptitle(title, x=0.01, y=0.99, ha="left", va="top", fontsize="large")
    fig.text(0.01, 0.01, "\n".join(lines), fontsize="small", color="0.3", va="bottom")
    top = 1.0 - title_inches / total_height
    fig.tight_layout(rect=(0.0, note_inches / total_height, right, top))
    return fig


def plot_widths_beside_paper(
    ours: Mapping[str, Mapping[Any, float]],
    paper: Mapping[str, Mapping[Any, Any]],
    *,
    our_setup: str,
    paper_setup: str,
    ours_err: Mapping[str, Mapping[Any, float]] | None = None,
    title: str | None = "Tunnel width against each hyperparameter",
) -> Figure:
    """The paper's tunnel-width table (LR, L2, dropout, ...) beside our final widths.

    Args:
        ours: hyperparameter (``"LR"``) -> {setting: our mean tunnel width}.
        paper: hyperparameter -> {setting: the paper's width}, e.g.
            ``{"LR": {"4e-4": 5.1, "8e-4": 5.4, ...}, "L2": {...}}``.
        ours_err: hyperparameter -> {setting: half-width of our interval}.
        our_setup, paper_setup, title: see :func:`plot_beside_paper`.

    One panel per hyperparameter that either side has, settings drawn at their rank.
    """
    names = list(dict.fromkeys([*ours, *paper]))
    panels = [
        Panel(
            title=name,
            ours={"tunnel width": ours[name]} if name in ours else {},
            paper={"tunnel width": paper[name]} if name in paper else {},
            xlabel=name,
            ylabel="tunnel width",
            x_axis="rank",
            ours_err={"tunnel width": (ours_err or {}).get(name, {})},
        )
        for name in names
    ]
    return plot_beside_paper(panels, our_setup=our_setup, paper_setup=paper_setup, title=title)


def _by_threshold(table: Mapping[Any, Mapping[Any, Any]]) -> dict[str, dict[Any, Any]]:
    """{setting: {threshold: count}} -> {"> threshold": {setting: count}}."""
    curves: dict[str, dict[Any, Any]] = {}
    for setting, counts in table.items():
        for threshold, count in counts.items():
            curves.setdefault(f"> {_label(threshold)}", {})[setting] = count
    return curves


def _counts(
    ours: Table,
    paper: Table,
    xlabel: str,
    x_axis: Literal["shared", "rank"],
    setups: tuple[str, str],
    title: str | None,
) -> Figure:
    """One log-scale panel of eigenvalue counts, a curve per threshold on each side."""
    panel = Panel(
        title="eigenvalues above threshold",
        ours=ours,
        paper=paper,
        xlabel=xlabel,
        ylabel="count (log)",
        x_axis=x_axis,
        log_y=True,
    )
    return plot_beside_paper([panel], our_setup=setups[0], paper_setup=setups[1], title=title)


def plot_short_dirs_beside_paper(
    ours: Mapping[Any, Mapping[Any, float]],
    paper: Mapping[Any, Mapping[Any, Any]],
    *,
    our_setup: str,
    paper_setup: str,
    setting: str = "learning rate",
    title: str | None = "Short directions against the learning rate",
) -> Figure:
    """The number of Hessian eigenvalues above each threshold against a setting, both sides.

    Args:
        ours: setting (e.g. an LR) -> {threshold: our count}.
        paper: setting -> {threshold: the paper's count}, e.g.
            ``{"4e-4": {"0.01": 6450, "0.02": 3000, "0.03": 2000}, ...}``.
        setting: what the settings are (the x label); drawn at their rank.
        our_setup, paper_setup, title: see :func:`plot_beside_paper`.
    """
    setups = (our_setup, paper_setup)
    return _counts(_by_threshold(ours), _by_threshold(paper), setting, "rank", setups, title)


def plot_tunnel_short_dirs_beside_paper(
    ours: Mapping[Any, Mapping[str, float]],
    paper: Mapping[Any, Mapping[str, Any]],
    *,
    our_setup: str,
    paper_setup: str,
    title: str | None = "Short directions at the tunnel's ends and middle",
) -> Figure:
    """Counts above each threshold at the tunnel's endpoints and middle, both sides.

    Args:
        ours: threshold -> {position: our count}, positions such as ``"ends"`` and
            ``"middle"`` (the same names on both sides).
        paper: threshold -> {position: the paper's count or ``(low, high)`` range}, e.g.
            ``{"0.03": {"ends": (280, 300), "middle": 845}, ...}``.
        our_setup, paper_setup, title: see :func:`plot_beside_paper`.
    """
    return _counts(
        {f"> {_label(t)}": dict(c) for t, c in ours.items()},
        {f"> {_label(t)}": dict(c) for t, c in paper.items()},
        "position on the tunnel",
        "shared",
        (our_setup, paper_setup),
        title,
    )


def plot_connector_short_dirs_beside_paper(
    ours: Mapping[Any, float],
    paper: Mapping[Any, Any],
    *,
    our_setup: str,
    paper_setup: str,
    threshold: str = "0.03",
    title: str | None = "Short directions at the connector's middle",
) -> Figure:
    """Counts at an m-connector's middle against the number of optima joined, both sides.

    Args:
        ours: number of optima m -> our count.
        paper: m -> the paper's count, e.g. ``{"1": 240, "2": 570, "3": 980, ...}``.
        threshold: the curvature threshold of both counts (the legend says it).
        our_setup, paper_setup, title: see :func:`plot_beside_paper`.
    """
    label = f"> {threshold}"
    setups = (our_setup, paper_setup)
    return _counts(
        {label: dict(ours)}, {label: dict(paper)}, "number of optima m", "shared", setups, title
    )


def plot_ensemble_beside_paper(
    ours: Mapping[str, Mapping[Any, float]],
    paper: Mapping[str, Mapping[Any, Any]],
    *,
    our_setup: str,
    paper_setup: str,
    ours_err: Mapping[str, Mapping[Any, float]] | None = None,
    ylabel: str = "test accuracy",
    title: str | None = "Snapshot ensemble, SWA and a single snapshot against LR_max",
) -> Figure:
    """Accuracy of each way of using the snapshots against the cyclic LR's peak, both sides.

    Args:
        ours: method (``"ensemble"``, ``"SWA"``, ``"single"``) -> {LR_max: our accuracy}.
        paper: method -> {LR_max: the paper's accuracy}, e.g.
            ``{"ensemble": {"16e-4": 0.733, "32e-4": 0.740, "64e-4": 0.738}, ...}``.
        ours_err: method -> {LR_max: half-width of our interval}.
        ylabel: the quantity (also for the diversity table: angle, disagreement).
        our_setup, paper_setup, title: see :func:`plot_beside_paper`.
    """
    panel = Panel(
        title=ylabel,
        ours=ours,
        paper=paper,
        xlabel="LR_max",
        ylabel=ylabel,
        x_axis="rank",
        ours_err=ours_err or {},
    )
    return plot_beside_paper([panel], our_setup=our_setup, paper_setup=paper_setup, title=title)
