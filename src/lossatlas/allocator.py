"""glibc's heap, set for steady step times."""

from __future__ import annotations

import ctypes

__all__ = ["STEADY_MMAP_THRESHOLD", "STEADY_TRIM_THRESHOLD", "steady_allocator"]


# glibc's mallopt parameters (malloc.h) and the values steady_allocator sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
STEADY_MMAP_THRESHOLD = 16 * 2**20
STEADY_TRIM_THRESHOLD = 64 * 2**20


def steady_allocator() -> bool:
    """Keep freed blocks of up to 16 MiB in glibc's heap rather than handing them back to the OS.

    Steps of small convolutions allocate and free the same few-MB buffers (im2col patches,
    padded inputs) every step. glibc serves blocks above a dynamic threshold with ``mmap`` and
    trims the heap's free top, so depending on the order of past frees a process pays fresh,
    zero-filled pages every step: the same 16-member cnn1d population took 1.8-2.6 s in some
    processes and 1.5-1.6 s with this (2 cores, 2026-12-04). The cost is up to 64 MiB of free
    memory kept per heap. Called by the CLI and in lossatlas's worker processes; a library
    user may call it once at start-up. Process-wide; returns ``False`` where there is no
    glibc ``mallopt`` (macOS, musl), and changes nothing there.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, on Linux
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError, TypeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD)
    )
