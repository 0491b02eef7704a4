"""Units of work and the executors that run them.

A stage splits its work into :class:`Unit` s (a group of population members, a jump, a grid
chunk), each writing its own chunks of the atlas store. :func:`run_units` skips units whose
completion marker already exists and runs the rest through an :class:`Executor`; the marker of
each unit is written right after its function returns, in the process that ran it. That is what
makes a killed run resumable: re-running the same command recomputes only unmarked units. The
marker also records what the unit wrote and which unit groups it ran inside itself
(:mod:`lossatlas.provenance`), so ``lossatlas verify`` can trace damage back to units.

Two executors implement the protocol: :class:`~lossatlas.execute.local.LocalExecutor` runs
units in order in this process, and :class:`~lossatlas.execute.ray.RayExecutor` (the ``ray``
extra) fans them out over a Ray cluster. Units are picklable (a top-level function and its
arguments) and the wrapper that marks them opens the store by path or URL, so it runs the same
on any worker. A unit's result
depends only on its arguments and seeds, never on where it ran, so both executors give the same
numbers (to float rounding of different thread counts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from lossatlas.provenance import current_log, recording
from lossatlas.store import AtlasStore

__all__ = ["Executor", "Unit", "progress_bar", "run_and_mark", "run_units", "unit_threads"]


def unit_threads(cpus_per_unit: float) -> int:
    """The torch thread count of a unit that is given ``cpus_per_unit`` cores (Ray and the
    process pool read ``cpus_per_unit`` the same way): the cores rounded down, at least 1."""
    return max(1, int(cpus_per_unit))


@dataclass(frozen=True)
class Unit:
    """One resumable piece of work: ``fn(*args, **kwargs)``, identified by ``id``.

    ``id`` must be stable across runs and unique within its store group (it names the
    completion marker), e.g. ``"members-0000-0015"``. ``fn`` must be a top-level function so
    the unit can be pickled to another process. ``weight`` is its relative cost, for progress.
    """

    id: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    def __call__(self) -> Any:
        """Run the unit's function."""
        return self.fn(*self.args, **self.kwargs)


@runtime_checkable
class Executor(Protocol):
    """Runs units and returns their results in input order."""

    def map(self, units: Sequence[Unit], *, description: str = "") -> list[Any]:
        """Run every unit; the i-th result belongs to the i-th unit."""
        ...


def progress_bar(enabled: bool | None) -> Any:
    """A transient rich progress bar on stderr; disabled off a terminal or when asked."""
    # Imported here so that worker processes that never draw a bar do not pay for rich.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    show = console.is_terminal if enabled is None else enabled
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[done]}/{task.fields[count]}"),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not show,
    )


def run_and_mark(out_dir: str, group: str, unit: Unit) -> Any:
    """Run ``unit`` and then write its completion marker (the marker always comes last).

    Takes the store's folder rather than an open store so that it can run on any worker that
    sees the same path or URL.
    """
    store = AtlasStore.open(out_dir, create=False)
    start = time.perf_counter()
    with recording() as log:
        result = unit()
    # What the unit wrote goes into its marker, so `lossatlas verify` can trace a damaged chunk
    # or document back to it (and to the units it ran: a step's parts).
    info = {
        "seconds": round(time.perf_counter() - start, 3),
        "writes": log.to_json(),
        "runs": sorted(log.runs),
    }
    store.mark_done(group, unit.id, info)
    return result


def run_units(
    executor: Executor,
    store: AtlasStore,
    group: str,
    units: Sequence[Unit],
    *,
    description: str = "",
) -> list[str]:
    """Run the units of ``group`` that have no completion marker yet; return their ids.

    Submit all of a group's units in one call: the count is recorded as ``units_total`` for
    ``lossatlas show``. The wall time is added to the group's ``timings["units"]``, so a resumed
    group reports its total time.
    """
    ids = [unit.id for unit in units]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate unit ids in group '{group}': {duplicates}")
    store.ensure_group(group, attrs={"units_total": len(units)})
    enclosing = current_log()
    if enclosing is not None:  # run inside another unit (a step's parts): it depends on these
        enclosing.runs.add(group)
    pending = [unit for unit in units if not store.unit_done(group, unit.id)]
    if not pending:
        return []
    wrapped = [
        Unit(
            id=unit.id,
            fn=run_and_mark,
            args=(str(store.out_dir), group, unit),
            weight=unit.weight,
        )
        for unit in pending
    ]
    start = time.perf_counter()
    executor.map(wrapped, description=description or group)
    store.record_timing(group, "units", time.perf_counter() - start, accumulate=True)
    return [unit.id for unit in pending]
