"""The local executor: units run one after another in this process, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lossatlas.execute.base import Unit, progress_bar

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Runs units one after another in this process, with a progress bar and ETA.

    ``progress``: ``None`` (default) shows the bar only when stderr is a terminal; ``False``
    never shows it. The bar is transient, so logs and tables printed afterwards stay clean.
    """

    def __init__(self, *, progress: bool | None = None) -> None:
        self.progress = progress

    def map(self, units: Sequence[Unit], *, description: str = "") -> list[Any]:
        """Run ``units`` in order; an exception stops the run (earlier units stay marked)."""
        with progress_bar(self.progress) as bar:
            total = sum(unit.weight for unit in units)
            task = bar.add_task(description or "working", total=total, done=0, count=len(units))
            results = []
            for done, unit in enumerate(units, start=1):
                results.append(unit())
                bar.update(task, advance=unit.weight, done=done)
        return results
