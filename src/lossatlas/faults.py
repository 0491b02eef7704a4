"""Faults of the storage under a run, turned into one line that says how to resume.

A run that stops because its disk filled up, its permissions changed or its mount vanished has
lost nothing that was complete: every finished unit kept its marker (written last, atomically).
So the message names what failed (the path and the operation) and says that re-running the same
command resumes. :func:`fault_message` writes that line for an ``OSError``; :class:`StoreFault`
carries it through executors (it pickles, so a Ray worker's fault reaches the driver whole) to
the CLI, which prints it with exit code 2.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import Any

from lossatlas.errors import StoreError

__all__ = ["RESUME", "StoreFault", "describe_error", "fault_message", "faults_as_store_errors"]

RESUME = "re-running the same command resumes where it stopped (completed units are kept)"

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}
# What a store on a lost mount (NFS, FUSE, a detached disk) answers, or a folder deleted under us.
_GONE = {
    errno.ENOENT,
    errno.ESTALE,
    errno.ENOTCONN,
    errno.EIO,
    errno.ENODEV,
    errno.ENXIO,
    errno.EHOSTDOWN,
    errno.EHOSTUNREACH,
}


# Backends that raise the builtin subclasses without an errno (fsspec's object stores).
_TYPE_CODES: dict[type[OSError], int] = {
    PermissionError: errno.EACCES,
    FileNotFoundError: errno.ENOENT,
    ConnectionError: errno.ENOTCONN,
}


class StoreFault(StoreError):
    """The storage failed under a run (disk full, permission, lost mount); re-run to resume."""


def describe_error(exc: BaseException) -> str:
    """One line for any exception: ``Type: first line of its message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def fault_message(exc: OSError, operation: str, path: Any = None) -> str:
    """One line for ``exc``: ``cannot OPERATION PATH: REASON; REMEDY, then re-run to resume``.

    ``path`` defaults to the file the OS named (``exc.filename``); both are shown when they
    differ, since the OS often names a temporary file beside the real target.
    """
    shown = str(path) if path is not None else None
    named = getattr(exc, "filename", None)
    if named is not None and str(named) != shown:
        shown = f"{shown} ({named})" if shown else str(named)
    shown = shown or "the output location"
    detail = exc.strerror or describe_error(exc)
    code = exc.errno if exc.errno is not None else _TYPE_CODES.get(type(exc))
    if code in _NO_SPACE:
        why, remedy = "no space left on device", "free some space"
    elif code in _NO_PERMISSION:
        why = f"permission denied ({detail}: read-only, or not yours)"
        remedy = "fix the permissions"
    elif code in _GONE:
        why = f"it is gone or unreachable ({detail})"
        remedy = "if its disk or network mount was lost, remount it"
    else:
        why, remedy = detail, "once that is fixed"
    return f"cannot {operation} {shown}: {why}; {remedy}, then {RESUME}"


@contextlib.contextmanager
def faults_as_store_errors(operation: str, path: Any = None) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a :class:`StoreFault` (one line)."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise StoreFault(fault_message(exc, operation, path)) from exc
