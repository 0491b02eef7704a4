"""A helper process's lifetime tied to its parent's."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["die_with"]

_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def die_with(parent: int) -> None:
    """End this process when ``parent`` dies, however it dies (Linux: ``PR_SET_PDEATHSIG``).

    A driver killed with SIGKILL runs no clean-up; without this its pool workers and its Horoi
    process would go on writing to the store while the next driver, which took over the lock,
    resumes the same work. Elsewhere this only checks that the parent is still there.

    Linux sends the signal when the *thread* that started this process exits, so start
    helpers from a thread that outlives them (lossatlas starts them from the driver's).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
