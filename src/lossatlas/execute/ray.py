"""The Ray executor: units of work fanned out over a Ray cluster (the ``ray`` extra).

Each unit becomes one Ray task running :func:`lossatlas.execute.base.run_and_mark` on a worker: the
worker opens the shared store by path or URL, computes, writes its own chunks and then its
marker. Nothing flows back to the driver except the unit's (small) return value, so the store
is written by many processes at once without locks: no two units share a chunk.

Fault tolerance comes from two layers:

* a worker process that dies mid-unit (killed, OOM, node lost) is retried by Ray up to
  ``max_retries`` times; the retry rewrites the same chunks with the same values, and the
  marker is written once, after the last write, by the attempt that finished;
* a driver that dies mid-run leaves finished units marked; re-running the same command skips
  them (:func:`lossatlas.execute.base.run_units`) and only the rest are sent again.

Python exceptions raised by a unit are not retried (they would fail again): the first one
cancels the units not yet started and is re-raised in the driver as the original exception, so
the CLI reports it in one line exactly as the local executor would.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any

from lossatlas.errors import ConfigError, ExecutionError
from lossatlas.execute.base import Unit, progress_bar, unit_threads

__all__ = ["RayExecutor"]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "executor 'ray' needs Ray: pip install 'lossatlas[ray]' (or use --executor local)"
        ) from exc
    return ray


def _run_on_worker(unit: Unit, threads: int) -> Any:
    """Run one unit in a Ray worker with ``threads`` torch threads."""
    from lossatlas.runtime import apply_threads

    # Ray reserves ``cpus_per_unit`` CPUs per task; more torch threads than that would make
    # co-located units thrash each other (measured 5-15x slowdowns on 2 cores).
    apply_threads(threads)
    return unit()


class RayExecutor:
    """Runs units as Ray tasks, at most one per ``cpus_per_unit`` CPUs of the cluster.

    Args:
        address: the cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``).
            ``None`` joins the instance this process already started, or starts a local one.
        max_retries: re-runs of a unit whose worker process died (not of Python errors).
        cpus_per_unit: CPUs reserved per unit; its torch thread count is this, rounded down.
        progress: show a progress bar (``None``: only when stderr is a terminal).
        num_cpus: CPUs of a local instance started here (default: all); ignored with an
            ``address``.
        gpus_per_unit: GPUs reserved per unit (Ray's ``num_gpus``; fractions share one GPU).
            :func:`~lossatlas.execute.executor_for` asks for 1 when the config's device is
            ``cuda``, so that units are placed on GPU workers instead of falling back to CPU.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        max_retries: int = 3,
        cpus_per_unit: float = 1.0,
        progress: bool | None = None,
        num_cpus: int | None = None,
        gpus_per_unit: float = 0.0,
    ) -> None:
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if cpus_per_unit <= 0:
            raise ConfigError(f"cpus_per_unit must be > 0, got {cpus_per_unit}")
        self.address = address
        self.max_retries = max_retries
        self.cpus_per_unit = cpus_per_unit
        self.progress = progress
        self.num_cpus = num_cpus
        if gpus_per_unit < 0:
            raise ConfigError(f"gpus_per_unit must be >= 0, got {gpus_per_unit}")
        self.gpus_per_unit = gpus_per_unit

    def __repr__(self) -> str:
        where = self.address or "local instance"
        return f"RayExecutor({where}, max_retries={self.max_retries})"

    def connect(self) -> Any:
        """Join (or start) the Ray instance now; returns the ``ray`` module.

        Called by :func:`~lossatlas.execute.executor_for`, so that a bad address fails in one
        line before any store is created, rather than after the first stage has begun.
        """
        ray = _import_ray()
        if ray.is_initialized():
            return ray
        if self.address not in (None, "auto", "local"):
            _check_reachable(self.address)
        options: dict[str, Any] = {
            "address": self.address,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
            # Workers must import the same lossatlas as the driver; for a local instance that
            # is this interpreter's environment, which Ray's workers inherit.
        }
        if self.address is None:
            options.update(num_cpus=self.num_cpus, include_dashboard=False)
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            target = self.address or "a local instance"
            raise ExecutionError(f"cannot start or join Ray at {target}: {exc}") from exc
        return ray

    def task_options(self, unit: Unit, description: str = "") -> dict[str, Any]:
        """The Ray resource request and settings of one unit's task."""
        options: dict[str, Any] = {
            "num_cpus": self.cpus_per_unit,
            "max_retries": self.max_retries,
            "retry_exceptions": False,
            "name": f"lossatlas:{description}:{unit.id}"[:200],
        }
        if self.gpus_per_unit > 0:
            options["num_gpus"] = self.gpus_per_unit
        return options

    def map(self, units: Sequence[Unit], *, description: str = "") -> list[Any]:
        """Run ``units`` as Ray tasks; results come back in input order."""
        if not units:
            return []
        ray = self.connect()
        threads = unit_threads(self.cpus_per_unit)
        task = ray.remote(_run_on_worker)
        refs = [
            task.options(**self.task_options(unit, description)).remote(unit, threads)
            for unit in units
        ]
        position = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(units)
        pending = list(refs)
        with progress_bar(self.progress) as bar:
            total = sum(unit.weight for unit in units)
            bar_task = bar.add_task(description or "working", total=total, done=0, count=len(units))
            done = 0
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    index = position[ref]
                    results[index] = self._result(ray, ref, units[index], pending)
                    done += 1
                    bar.update(bar_task, advance=units[index].weight, done=done)
        return results

    @staticmethod
    def _result(ray: Any, ref: Any, unit: Unit, pending: list[Any]) -> Any:
        """The unit's return value; on failure cancel what has not run and raise one error."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            _cancel(ray, pending)
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise ExecutionError(f"unit '{unit.id}' failed on a Ray worker: {exc}") from exc
        except ray.exceptions.RayError as exc:
            _cancel(ray, pending)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExecutionError(
                f"unit '{unit.id}' was lost on Ray after its retries ({first}); "
                "re-run the same command to resume"
            ) from exc


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens on: ``ray.init`` would retry for minutes."""
    host_port = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"Ray address '{address}' is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ExecutionError(
            f"cannot reach Ray at {address} ({reason}); is the cluster up?"
        ) from exc


def _cancel(ray: Any, refs: list[Any]) -> None:
    """Cancel units not yet finished; finished units keep their markers."""
    for ref in refs:
        try:
            ray.cancel(ref)
        except Exception:
            continue
