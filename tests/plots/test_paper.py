"""The paper's numbers beside ours: every point lands where its table says, on matching axes,
with the paper's curves marked as another setup."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from lossatlas.plots import figure_to_png
from lossatlas.plots.paper import (
    Panel,
    plot_beside_paper,
    plot_connector_short_dirs_beside_paper,
    plot_ensemble_beside_paper,
    plot_short_dirs_beside_paper,
    plot_tunnel_short_dirs_beside_paper,
    plot_widths_beside_paper,
)

SETUPS = {"our_setup": "mnist1d MLP, SGD", "paper_setup": "CIFAR-10 SimpleCNN, Adam"}
# PAPERS.md A6: tunnel width (LR, L2) and short directions against LR.
PAPER_WIDTH = {
    "LR": {"4e-4": 5.1, "8e-4": 5.4, "16e-4": 5.8, "32e-4": 6.0},
    "L2": {"0": 6.0, "3e-5": 6.2, "1e-4": 6.5},
}
PAPER_SHORT = {
    "4e-4": {"0.01": 6450, "0.02": 3000, "0.03": 2000},
    "8e-4": {"0.01": 4800, "0.02": 2030, "0.03": 1200},
}


def _lines(fig: Figure, axis: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(linestyle, x, y) of each data line on an axes (error-bar caps excluded)."""
    ax = fig.axes[axis]
    return [
        (line.get_linestyle(), np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata()))
        for line in ax.get_lines()
        if line.get_marker() in ("o", "s")
    ]


def _texts(fig: Figure) -> str:
    return " ".join(t.get_text() for t in fig.texts)


def test_widths_are_drawn_by_rank_with_both_settings_on_each_tick() -> None:
    ours = {"LR": {0.2: 5.8, 0.025: 4.9, 0.05: 4.4, 0.1: 4.6}}
    fig = plot_widths_beside_paper(ours, PAPER_WIDTH, ours_err={"LR": {0.1: 0.3}}, **SETUPS)
    assert [ax.get_title() for ax in fig.axes] == ["LR", "L2"]
    (our_style, x, y), (paper_style, px, py) = _lines(fig, 0)
    assert our_style == "-" and paper_style == "--"
    np.testing.assert_array_equal(x, [0, 1, 2, 3])
    np.testing.assert_array_equal(y, [4.9, 4.4, 4.6, 5.8])  # sorted by the LR's value
    np.testing.assert_array_equal(px, [0, 1, 2, 3])
    np.testing.assert_array_equal(py, [5.1, 5.4, 5.8, 6.0])
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["0.025\n4e-4", "0.05\n8e-4", "0.1\n16e-4", "0.2\n32e-4"]
    # The L2 panel has only the paper's curve.
    assert [style for style, _, _ in _lines(fig, 1)] == ["--"]
    assert "another setup" in _texts(fig) and "CIFAR-10 SimpleCNN, Adam" in _texts(fig)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["tunnel width", "ours", "paper\n(another setup)"]
    assert figure_to_png(fig).startswith(b"\x89PNG")


def test_short_directions_get_one_colour_per_threshold_on_a_log_axis() -> None:
    ours = {
        0.05: {"0.01": 300, "0.02": 120, "0.03": 60},
        0.1: {"0.01": 200, "0.02": 90, "0.03": 40},
    }
    fig = plot_short_dirs_beside_paper(ours, PAPER_SHORT, **SETUPS)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = [line for line in ax.get_lines() if line.get_marker() in ("o", "s")]
    assert len(lines) == 6
    by_colour: dict[str, list[str]] = {}
    for line in lines:
        by_colour.setdefault(str(line.get_color()), []).append(line.get_linestyle())
    assert all(sorted(styles) == ["-", "--"] for styles in by_colour.values())
    paper_01 = next(line for line in lines if line.get_linestyle() == "--")
    np.testing.assert_array_equal(paper_01.get_ydata(), [6450, 4800])


def test_tunnel_ranges_are_drawn_as_midpoints_with_bars() -> None:
    fig = plot_tunnel_short_dirs_beside_paper(
        {"0.03": {"ends": 40, "middle": 90}},
        {"0.03": {"ends": (280, 300), "middle": 845}},
        **SETUPS,
    )
    ax = fig.axes[0]
    (_, x, y), (_, px, py) = _lines(fig)
    np.testing.assert_array_equal(y, [40, 90])
    np.testing.assert_array_equal(x, [0, 1])  # categorical positions shared by both
    np.testing.assert_array_equal(px, [0, 1])
    np.testing.assert_array_equal(py, [290, 845])
    bars = [c for c in ax.collections if len(c.get_segments()) == 2]
    assert any(np.allclose(sorted(s[:, 1]), [280, 300]) for c in bars for s in c.get_segments())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ends", "middle"]


def test_connectors_share_a_numeric_axis() -> None:
    fig = plot_connector_short_dirs_beside_paper(
        {1: 20, 2: 35, 3: 50}, {"1": 240, "2": 570, "3": 980, "4": 1155, "5": 1065}, **SETUPS
    )
    (_, x, _), (_, px, py) = _lines(fig)
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_array_equal(px, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(py, [240, 570, 980, 1155, 1065])
    assert "> 0.03" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_ensemble_methods_keep_their_colour_on_both_sides() -> None:
    ours = {"ensemble": {0.05: 0.8, 0.1: 0.82}, "SWA": {0.05: 0.79, 0.1: 0.78}}
    paper = {"ensemble": {"16e-4": 0.733, "32e-4": 0.740}, "SWA": {"16e-4": 0.728, "32e-4": 0.724}}
    fig = plot_ensemble_beside_paper(ours, paper, **SETUPS)
    lines = [line for line in fig.axes[0].get_lines() if line.get_marker() in ("o", "s")]
    colours = [line.get_color() for line in lines]
    assert colours[0] == colours[2] and colours[1] == colours[3] and colours[0] != colours[1]


def test_no_panel_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one panel"):
        plot_beside_paper([], **SETUPS)
    empty = Panel("t", {}, {}, "x", "y")
    assert isinstance(plot_beside_paper([empty], **SETUPS), Figure)
