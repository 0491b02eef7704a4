"""Probe stages: run one probe on one target and keep its arrays and figures in the store.

Each probe run is the group ``probes/<kind>/<name>``. Its fingerprint is the probe's options
plus the target, so asking for the same name with other options is refused rather than mixing
results, and re-running the same command finds the unit complete and recomputes nothing.

A probe whose work splits into independent jobs (curvature estimators, blocks of grid rows)
hands them to :meth:`ProbeJobs.run` as :class:`~lossatlas.stages.output.Part` s: each runs as one
unit on the executor (possibly a Ray worker), rebuilding the target from the picklable
:class:`ProbeRequest`, and keeps its output under ``probes/<kind>/<name>/jobs/<part id>`` with
its marker in ``.../jobs/_units/``, so an interrupted probe resumes with the missing jobs only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lossatlas.config import Config, fingerprint_dump
from lossatlas.context import open_store
from lossatlas.errors import StoreError
from lossatlas.execute import Executor, LocalExecutor, executor_for
from lossatlas.location import Location
from lossatlas.stages.output import Part, StageOutput, describe_section, run_once, run_parts
from lossatlas.stages.target import Target, target_from_checkpoint, target_from_store
from lossatlas.store import AtlasStore

__all__ = ["JOBS_GROUP", "PROBES_GROUP", "ProbeJobs", "ProbeRequest", "run_probe"]

PROBES_GROUP = "probes"
# Subgroup of a probe run that holds its jobs' outputs and completion markers.
JOBS_GROUP = "jobs"


@dataclass(frozen=True)
class ProbeRequest:
    """Where the probed point comes from: a member of the store's population, or a checkpoint.

    With a ``checkpoint``, ``config`` says which model and data it belongs to; the store in
    ``out`` is created for that config if it does not exist yet.
    """

    out: Location
    member: int = 0
    checkpoint: Path | None = None
    config: Config | None = None

    def open(self) -> tuple[AtlasStore, Target]:
        """The store and the target; cheap to repeat (a job on a worker calls it again)."""
        if self.checkpoint is not None:
            if self.config is None:
                raise StoreError("a checkpoint needs a config naming its model and data")
            return open_store(self.out, self.config), target_from_checkpoint(
                self.config, self.checkpoint
            )
        store = AtlasStore.open(self.out, create=False)
        return store, target_from_store(store, self.member)


@dataclass(frozen=True)
class ProbeJobs:
    """Fans a probe's independent jobs out on an executor; handed to the probe's compute.

    Attributes:
        request: where the target comes from; jobs pass it to their part functions, which call
            ``request.open()`` to rebuild the target wherever they run.
        group: the probe run's group, ``probes/<kind>/<name>``.
        executor: runs the jobs (local, or Ray workers).
    """

    request: ProbeRequest
    group: str
    executor: Executor

    def jobs_group(self, step: str = "") -> str:
        """Where the parts of ``step`` keep their outputs and markers (see :meth:`run`)."""
        return f"{self.group}/{JOBS_GROUP}/{step}" if step else f"{self.group}/{JOBS_GROUP}"

    def output_group(self, part_id: str, step: str = "") -> str:
        """The store group holding the output of part ``part_id`` of ``step``."""
        return f"{self.jobs_group(step)}/{part_id}"

    def run(self, parts: list[Part], *, step: str = "") -> dict[str, StageOutput]:
        """Run the parts not yet complete; return every part's stored arrays and scalars.

        ``step`` names a batch of parts that later parts depend on (e.g. the directions every
        block of a surface needs): it gets its own subgroup ``jobs/<step>``, so each group's
        unit count covers one batch. The main batch of jobs uses ``jobs`` itself.
        """
        kind = self.group.removeprefix(f"{PROBES_GROUP}/")
        return run_parts(
            self.request.out,
            self.jobs_group(step),
            parts,
            self.executor,
            description=f"{kind} {step}".rstrip(),
        )


ProbeCompute = Callable[[Target, Any, ProbeJobs], StageOutput]


def run_probe(
    request: ProbeRequest,
    kind: str,
    name: str,
    options: BaseModel,
    compute: ProbeCompute,
    executor: Executor | None = None,
    *,
    description: str = "",
    runtime_options: Collection[str] = (),
) -> tuple[str, bool]:
    """Run ``compute(target, options, jobs)`` once and store its output under ``probes/kind/name``.

    ``description`` (one line: what the probe measures) is written into the group's attrs, for
    the report.
    ``jobs`` (a :class:`ProbeJobs`) runs the probe's independent parts on ``executor``;
    default: the one ``request.config``'s ``execution`` section asks for, else a local one.
    ``runtime_options`` names options that say how the work is split, not what it computes
    (e.g. ``row_chunks``): they are left out of the fingerprint, so changing them is no conflict.
    Options marked :data:`~lossatlas.config.WHEN_SET` (``autocast``) are fingerprinted only when
    set, so a probe run made before they existed resumes with their default.

    Returns ``(group, ran)``: ``ran`` is false when a completed result was already there.
    """
    # Before the store is opened (and, for a checkpoint, created): an unreachable cluster
    # should leave nothing behind.
    if executor is None:
        executor = _default_executor(request)
    store, target = request.open()
    describe_section(
        store,
        PROBES_GROUP,
        title="Probes",
        text="Probes of one trained point, run on their own (lossatlas width, surface, ...).",
        order=2,
    )
    group = f"{PROBES_GROUP}/{kind}/{name}"
    fingerprint = {
        "options": fingerprint_dump(options, exclude=runtime_options),
        "source": target.source,
    }
    jobs = ProbeJobs(request, group, executor)
    try:
        ran = run_once(
            store.out_dir,
            group,
            fingerprint,
            compute,
            target,
            options,
            jobs,
            attrs={"kind": kind, "description": description} if description else {"kind": kind},
        )
    except StoreError as exc:
        if "different config" not in str(exc):
            raise
        raise StoreError(f"{exc}; or give this probe run another --name") from exc
    return group, ran


def _default_executor(request: ProbeRequest) -> Executor:
    if request.config is not None:
        return executor_for(request.config)
    return LocalExecutor(progress=False)
