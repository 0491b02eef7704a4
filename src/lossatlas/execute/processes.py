"""The process-pool executor: units fan out over this machine's cores, one process each.

Why it exists: on a small CPU box, torch's threads do not pay for the units lossatlas runs.
A dense Hessian spectrum of the default ``cnn1d`` (D = 2,474, 512 samples) takes 10.5 s with
two threads and 11.1 s with one, while two one-thread processes side by side take 10.7 s each
(2-core machine, ``benchmarks/README.md``, measured before ``dense_hessian`` spread its own
columns over Python threads): the work is thousands of small products, and processes, not
torch's threads, are what scale it. Ray does the same across machines but brings a
head node, an object store and a dashboard; this needs only the standard library.

Workers are started with ``spawn`` (forking a process that has started torch's thread pool
is unsafe) and are kept for the life of this process, so later stages reuse them and their
per-process caches (the dataset). Each worker runs ``threads`` torch threads. Units are
picklable by design (:mod:`lossatlas.execute.base`); their results come back in input order.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

from lossatlas.errors import ConfigError, ExecutionError
from lossatlas.execute._lifetime import die_with
from lossatlas.execute.base import Unit, progress_bar

__all__ = ["ProcessExecutor", "available_cores", "available_memory", "default_workers"]

# One pool per (workers, threads), shared by every ProcessExecutor of this process: stages
# build their executor afresh from the config, and starting workers (importing torch) costs
# seconds each.
_POOLS: dict[tuple[int, int], ProcessPoolExecutor] = {}


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Memory one worker is allowed for when its count is chosen: the quick run on two workers
# peaked at 2.28 GB for the driver and both workers together (benchmarks/README.md), so 1 GiB
# per worker leaves the driver its share.
WORKER_MEMORY_BYTES = 2**30


def available_memory() -> int | None:
    """Bytes of memory the kernel says new work can use (``MemAvailable``), or ``None``."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_workers(threads: int) -> int:
    """One worker per ``threads`` cores, but no more than fit in memory at
    :data:`WORKER_MEMORY_BYTES` each: a 64-core box must not start 64 workers it cannot hold."""
    by_cores = max(1, available_cores() // threads)
    memory = available_memory()
    if memory is None:
        return by_cores
    return max(1, min(by_cores, memory // WORKER_MEMORY_BYTES))


def _start_worker(threads: int, parent: int) -> None:
    die_with(parent)  # a driver killed outright takes its workers with it
    # Imported here: the parent need not pay for torch before a unit needs it.
    from lossatlas.allocator import steady_allocator
    from lossatlas.runtime import apply_threads

    apply_threads(threads)
    steady_allocator()


def _pool(workers: int, threads: int) -> ProcessPoolExecutor:
    key = (workers, threads)
    pool = _POOLS.get(key)
    if pool is None:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=_start_worker,
            initargs=(threads, os.getpid()),
        )
        _POOLS[key] = pool
    return pool


def _discard(key: tuple[int, int]) -> None:
    pool = _POOLS.pop(key, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def _shutdown_pools() -> None:
    for key in list(_POOLS):
        _discard(key)


class ProcessExecutor:
    """Runs units in a pool of worker processes on this machine.

    Args:
        workers: processes at once; ``None``: :func:`default_workers` (one per ``threads``
            cores, capped by the memory available).
        threads: torch threads of each worker (default 1: see the module docstring).
        progress: show a progress bar (``None``: only when stderr is a terminal).

    A unit that raises stops the run with that same exception, after the units already
    running have finished (their markers are kept, so a re-run does only what is left);
    units not yet started are cancelled. A worker that dies (killed, out of memory) is one
    :class:`~lossatlas.errors.ExecutionError`, and the pool is replaced on the next call.
    """

    def __init__(
        self, *, workers: int | None = None, threads: int = 1, progress: bool | None = None
    ) -> None:
        if threads < 1:
            raise ConfigError(f"threads per worker must be >= 1, got {threads}")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.threads = threads
        self.workers = workers if workers is not None else default_workers(threads)
        self.progress = progress

    def __repr__(self) -> str:
        return f"ProcessExecutor(workers={self.workers}, threads={self.threads})"

    def map(self, units: Sequence[Unit], *, description: str = "") -> list[Any]:
        """Run ``units`` on the pool; the i-th result belongs to the i-th unit."""
        if not units:
            return []
        key = (self.workers, self.threads)
        pool = _pool(*key)
        try:
            futures = [pool.submit(unit) for unit in units]
        except BrokenProcessPool as exc:
            _discard(key)
            raise ExecutionError(f"the worker pool is broken ({exc}); re-run the command") from exc
        index = {future: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * len(units)
        pending: set[Future[Any]] = set(futures)
        with progress_bar(self.progress) as bar:
            total = sum(unit.weight for unit in units)
            task = bar.add_task(description or "working", total=total, done=0, count=len(units))
            done = 0
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                failed = [f for f in finished if f.exception() is not None]
                if failed:
                    self._stop(key, failed[0], units[index[failed[0]]], pending)
                for future in finished:
                    results[index[future]] = future.result()
                    done += 1
                    bar.update(task, advance=units[index[future]].weight, done=done)
        return results

    @staticmethod
    def _stop(
        key: tuple[int, int], failed: Future[Any], unit: Unit, pending: set[Future[Any]]
    ) -> None:
        """Cancel what has not started, let running units finish, and raise one error."""
        for future in pending:
            future.cancel()
        wait(pending)
        error = failed.exception()
        if isinstance(error, BrokenProcessPool):
            _discard(key)
            raise ExecutionError(
                f"unit '{unit.id}' was lost: a worker process died (killed, or out of memory); "
                "re-run the same command to resume"
            ) from error
        assert error is not None
        raise error
