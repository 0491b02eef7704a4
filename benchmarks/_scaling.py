"""Helpers the benchmark scripts share: the machine's load, log-log slopes, and the PNG curves.

Benchmarks run as scripts (``python benchmarks/x.py``), so this module is imported by its bare
name from the scripts' own folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent


def load() -> str:
    """The machine's load: other processes on a shared machine inflate every wall time."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of ``log y`` against ``log x``: ``y ~ x^slope``."""
    return float(stats.linregress(np.log(x), np.log(y)).slope)


def save_curves(
    path: Path,
    title: str,
    xlabel: str,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    ylabel: str = "seconds",
) -> Path:
    """Plot each ``label -> (x, y)`` on log-log axes, its slope in the legend; write ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    for label, (x, y) in curves.items():
        slope = f", slope {loglog_slope(x, y):.2f}" if len(x) > 1 else ""
        ax.loglog(x, y, marker="o", label=f"{label}{slope}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (what the README shows and the script prints)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
