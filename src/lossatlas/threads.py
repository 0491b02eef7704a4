"""Work shared out over Python threads of one torch thread each (CPU).

torch releases the GIL inside its kernels, so Python threads run torch ops side by side. Each
thread runs with one intra-op thread, which buys two things on a small CPU:

* speed where one op is too small to use a second core well (a per-point forward of a mid-size
  MLP, a population step of a few members, a Hessian column): two threads of one core each
  beat one op on two cores;
* numbers independent of the core count: each piece of work is computed on one thread,
  whichever thread it lands on and however many there are.

The calling thread stays at one torch thread while the workers run (and while it does small
work between their calls, see :func:`one_torch_thread`): with two, its OpenMP workers
spin-wait after every op it runs and take a core from the workers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["ThreadShares", "even_shares", "on_threads", "one_torch_thread", "thread_count"]

_T = TypeVar("_T")
_B = TypeVar("_B")


def thread_count(device: torch.device, work: int) -> int:
    """How many threads to share ``work`` pieces over: torch's thread count on CPU, capped at
    ``work``; one elsewhere (a GPU queues its kernels from one thread)."""
    if device.type != "cpu":
        return 1
    return max(1, min(work, torch.get_num_threads()))


def even_shares(count: int, shares: int) -> list[slice]:
    """``range(count)`` cut into ``shares`` contiguous slices of near-equal length."""
    bounds = [round(i * count / shares) for i in range(shares + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def _on_one_thread(fn: Callable[[_B], _T], arg: _B) -> _T:
    torch.set_num_threads(1)  # this thread's intra-op pool, however it was started
    return fn(arg)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch at one intra-op thread inside, the caller's count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class ThreadShares:
    """A pool that runs ``fn(i)`` for each share ``i in range(shares)``, each on its own thread.

    For many short calls (a population's steps): the threads are started once. With one share
    ``fn(0)`` runs in the caller, unchanged.
    """

    def __init__(self, shares: int) -> None:
        self.shares = shares
        self.pool = ThreadPoolExecutor(max_workers=shares) if shares > 1 else None

    def map(self, fn: Callable[[int], _T]) -> list[_T]:
        """``[fn(0), ..., fn(shares - 1)]``; a thread's error is raised here."""
        if self.pool is None:
            return [fn(0)]
        with one_torch_thread():
            futures = [self.pool.submit(_on_one_thread, fn, i) for i in range(self.shares)]
            return [future.result() for future in futures]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)


def on_threads(run: Callable[[_B], _T], blocks: Sequence[_B], workers: int) -> list[_T]:
    """``run`` every block on ``workers`` threads of one torch thread each; results in order.

    The pool hands blocks out in order, so the threads stay busy to the end. A thread's error
    is raised here. With one worker the blocks run in the caller, at its thread count.
    """
    if workers <= 1:
        return [run(block) for block in blocks]
    with one_torch_thread(), ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_on_one_thread, run, block) for block in blocks]
        return [done.result() for done in futures]
