"""One function run in a spawned process beside the caller's own work.

``lossatlas run`` uses it to run the geometry & topology study while the wedge study keeps
the process pool busy: on a 2-core machine the wedge study leaves about a third of the CPU
idle (steps of one unit, the driver's own plotting and claims), and the Horoi study, a chain
of small steps, fills it (``benchmarks/README.md``).

The child is started with ``spawn`` (forking a process that has started torch's threads is
unsafe) and runs ``threads`` torch threads. Its return value or its exception comes back
through a pipe: :meth:`BesideRun.result` returns the one or raises the other, unchanged where
it pickles, else as one :class:`~lossatlas.errors.ExecutionError` line. A child that dies
without an answer (killed, out of memory) is one ``ExecutionError`` too. :meth:`BesideRun.stop`
terminates it: lossatlas units mark themselves done only when complete, so a stopped study
resumes where it stood. On Linux the child also dies with its parent, even a parent killed
outright, so no orphan goes on writing to the store.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.connection import Connection
from typing import Any

from lossatlas.errors import ExecutionError
from lossatlas.execute._lifetime import die_with

__all__ = ["BesideRun"]


def _child(
    conn: Connection, parent: int, threads: int, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    die_with(parent)
    from lossatlas.allocator import steady_allocator
    from lossatlas.runtime import apply_threads

    apply_threads(threads)
    steady_allocator()
    try:
        answer: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # everything goes back to the parent, which decides
        answer = ("error", exc)
    try:
        payload = pickle.dumps(answer)
    except Exception:  # an answer that does not pickle becomes one line that does
        kind, value = answer
        text = f"{type(value).__name__}: {value}" if kind == "error" else "an unpicklable result"
        payload = pickle.dumps(("error", ExecutionError(text.splitlines()[0])))
    conn.send_bytes(payload)
    conn.close()


class BesideRun:
    """``fn(*args)`` in a spawned child process with ``threads`` torch threads.

    ``fn`` and ``args`` must pickle (a module-level function and plain values).
    ``name`` is what error messages call the work (e.g. ``"the geometry & topology study"``).
    """

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], *, name: str, threads: int = 1
    ) -> None:
        self.name = name
        context = get_context("spawn")
        self._conn, child_end = context.Pipe(duplex=False)
        self._process = context.Process(
            # Not a daemon: the study may start processes of its own (a daemon may not).
            target=_child,
            args=(child_end, os.getpid(), threads, fn, args),
            name=name,
            daemon=False,
        )
        self._process.start()
        child_end.close()  # the parent keeps only its reading end: EOF when the child exits

    def result(self) -> Any:
        """Wait for the child; its return value, or its exception raised here."""
        try:
            payload = self._conn.recv_bytes()
        except EOFError:
            self._process.join()
            raise ExecutionError(
                f"{self.name} ran in a separate process that died with exit code "
                f"{self._process.exitcode} before it finished; run the command again to resume"
            ) from None
        finally:
            self._conn.close()
        self._process.join()
        kind, value = pickle.loads(payload)
        if kind == "error":
            raise value
        return value

    def stop(self) -> None:
        """Terminate the child (if it still runs) and wait for it to go."""
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._conn.close()
