"""``lossatlas run``: both studies, then ``summary.json`` and ``report.html``, resumably."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from lossatlas.claims import CLAIMS_GROUP, load_claims
from lossatlas.context import open_store, run_dataset, template_model
from lossatlas.execute import Executor, executor_for
from lossatlas.execute.beside import BesideRun
from lossatlas.location import Location, as_location, is_url
from lossatlas.lock import driver_lock
from lossatlas.stages.summary import claim_counts, write_summary
from lossatlas.studies.config import RunConfig, check_replicates
from lossatlas.studies.wedges.study import WEDGE_STEPS, run_wedges

__all__ = ["RunResult", "overlaps", "run_all"]

_HOROI_TITLE = "geometry & topology study (jump and retrain, PHATE, persistence)"

# Rough share of the quick preset's wall time per step, measured on 2 CPU cores; only used to
# turn "steps done" into an ETA, so it need not be exact.
_STEP_WEIGHTS = {
    "toy": 5,
    "radial_cuts": 10,
    "tunnel": 20,
    "connectors": 15,
    "sweep": 60,
    "ensemble": 30,
    "horoi": 60,
}


@dataclass(frozen=True)
class RunResult:
    """Where ``run`` wrote its outputs, and the claim counts."""

    out: Location
    summary: Location
    report: Location
    counts: dict[str, int]
    seconds: float
    ran_steps: list[str]


class _StepLog:
    """One line per finished step: what it did, how long it took, and an ETA for the rest."""

    def __init__(self, console: Console, steps: list[str]) -> None:
        self.console, self.steps = console, steps
        self.started = self.last = time.perf_counter()
        self.done_weight = 0.0
        self.total_weight = float(sum(_STEP_WEIGHTS.get(s, 10) for s in steps))

    def __call__(self, step: str, ran: bool, *, status: str | None = None) -> None:
        now = time.perf_counter()
        self.done_weight += _STEP_WEIGHTS.get(step, 10)
        elapsed = now - self.started
        rate = elapsed / self.done_weight if self.done_weight else 0.0
        eta = rate * (self.total_weight - self.done_weight)
        index = self.steps.index(step) + 1 if step in self.steps else 0
        if status is None:
            status = f"done in {now - self.last:.1f} s" if ran else "already complete"
        self.console.print(
            f"[{index}/{len(self.steps)}] {step}: {status}; "
            f"elapsed {elapsed:.0f} s, ETA ~{eta:.0f} s",
            highlight=False,
        )
        self.last = now


def run_all(
    config: RunConfig,
    out: str | Path,
    *,
    console: Console | None = None,
    wait: bool = False,
) -> RunResult:
    """Run every enabled study on ``config`` into ``OUT``; completed steps are skipped.

    The run holds ``OUT``'s one-driver lock (:func:`lossatlas.lock.driver_lock`): another
    driver on the same ``OUT`` is refused with one line naming it, or waited for with
    ``wait``. Its units (on Ray workers too) never take the lock, so they are never refused.
    """
    started = time.perf_counter()
    out = as_location(out)
    console = console or Console(stderr=True)
    # Bad data or an impossible model fail here, before a store is created or touched.
    template_model(config, run_dataset(config))
    if config.wedges.enabled:
        check_replicates(config)
    executor = executor_for(config)  # so does an unreachable cluster or a missing Ray
    with driver_lock(out, wait=wait):
        return _run_locked(config, out, console, executor, started)


def _run_locked(
    config: RunConfig, out: Location, console: Console, executor: Executor, started: float
) -> RunResult:
    """:func:`run_all` once the lock is held."""
    store = open_store(out, config)  # refuses a store of another config before any work
    steps = list(WEDGE_STEPS) if config.wedges.enabled else []
    horoi = _horoi_runner(config, out, executor)
    if horoi is not None:
        steps.append("horoi")
    log = _StepLog(console, steps)
    if config.execution.executor != "local":
        console.print(f"units of work run on {executor!r}", highlight=False)
    ran: list[str] = []
    beside = None
    if overlaps(config, out):
        # Both drivers add claims to one group: make it now, so that neither creates it.
        store.ensure_group(CLAIMS_GROUP)
        console.print(
            f"{_HOROI_TITLE}: in a process of its own, beside the wedge study", highlight=False
        )
        beside = BesideRun(
            _run_horoi_alone,
            (config.model_dump_json(), str(out)),
            name="the geometry & topology study",
            threads=1,
        )
    try:
        if config.wedges.enabled:
            console.print("training the base population, then the wedge study", highlight=False)
            ran += run_wedges(config, out, on_step=log, executor=executor)
    except BaseException:
        if beside is not None:
            beside.stop()  # its finished units stay marked: a re-run resumes both studies
        raise
    if beside is not None:
        before = time.perf_counter()
        beside.result()
        waited = time.perf_counter() - before
        log("horoi", True, status=f"done beside the wedge study (waited {waited:.1f} s for it)")
    elif horoi is not None:
        console.print(_HOROI_TITLE, highlight=False)
        before = time.perf_counter()
        horoi()
        log("horoi", time.perf_counter() - before > 1.0)
    summary = write_summary(store)
    from lossatlas.report import build_report

    report = build_report(out)
    seconds = time.perf_counter() - started
    if ran:
        store.record_timing("", "run", seconds)
    counts = claim_counts(load_claims(store))
    return RunResult(out, summary, report, counts, seconds, ran)


def overlaps(config: RunConfig, out: Location) -> bool:
    """Whether ``run`` puts the geometry & topology study in a process beside the wedge study:
    with the process pool, ``execution.overlap_studies`` on, both studies enabled and a folder
    store (the two drivers' attribute updates are serialised by a file lock, which object
    stores lack)."""
    execution = config.execution
    return (
        execution.executor == "processes"
        and execution.overlap_studies
        and config.wedges.enabled
        and config.horoi.enabled
        and not is_url(out)
    )


def _run_horoi_alone(config_json: str, out: str) -> None:
    """The geometry & topology study in a process of its own (see :func:`overlaps`): its units
    run in that process, on its one torch thread, while the wedge study holds the pool."""
    from lossatlas.execute import LocalExecutor
    from lossatlas.studies.horoi.study import run_horoi

    config = RunConfig.model_validate_json(config_json)
    run_horoi(config, out, executor=LocalExecutor(progress=False))


def _horoi_runner(config: RunConfig, out: Location, executor: Executor) -> Any:
    """A thunk running the geometry & topology study, or None when it is disabled."""
    if not config.horoi.enabled:
        return None
    from lossatlas.studies.horoi.study import run_horoi

    return lambda: run_horoi(config, out, executor=executor)
