"""One driver per store: the lock that a command which writes ``OUT`` holds while it runs.

Two drivers on one store (two terminals, a scheduler that retries) would race on the same
groups and attributes. So every command that writes takes :func:`driver_lock` on ``OUT`` first:

* **Folders**: ``flock`` on ``OUT/.lossatlas.lock``. The kernel drops the lock when its process
  dies, however it dies, so a killed driver never leaves a stale lock. The file also says who
  holds it (pid, host, start time, command), for the message the second driver prints. Where the
  file system has no ``flock`` (some network mounts), the folder falls back on a lease.
* **URLs** (object stores have no locks): a lease, the JSON document ``OUT/.lossatlas.lock``
  that the holder rewrites every ``ttl / 4`` seconds (a heartbeat). A lease whose heartbeat
  stopped for ``ttl`` seconds, or whose holder was a process of this host that is gone, is
  stale and taken over. Writing a lease is last-writer-wins, so a taker writes, waits a
  moment and reads it back before it counts the lease as its own.

Only drivers take the lock. Ray workers of the holding driver open the store by path inside
units and never ask for it, so they are never refused; ``show``, ``report`` and ``verify``
only read and take no lock. Within one process the lock is re-entrant: a library call that
takes it inside a command that already holds it goes straight through.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lossatlas.errors import StoreError
from lossatlas.faults import describe_error, fault_message
from lossatlas.location import Location, as_location, is_url, join_location, url_filesystem

__all__ = ["LOCK_NAME", "Holder", "Lease", "StoreLockedError", "driver_lock"]

LOCK_NAME = ".lossatlas.lock"
DEFAULT_TTL = 60.0  # seconds without a heartbeat before a lease counts as abandoned
_POLL = 0.5  # seconds between attempts while waiting
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class StoreLockedError(StoreError):
    """Another driver holds the store; the message names it (pid, host, start time)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: what the lock file says (any field may be missing in old files)."""

    pid: int | None = None
    host: str | None = None
    started: str | None = None
    command: str | None = None
    token: str | None = None
    beat: float | None = None
    ttl: float | None = None
    proc_start: str | None = None

    @classmethod
    def parse(cls, raw: bytes | None) -> Holder | None:
        """The holder recorded in ``raw``, or None when it is empty or unreadable."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        fields = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in fields})

    def describe(self) -> str:
        """``pid 123 on host, started 2026-01-01T12:00:00+00:00 (lossatlas run ...)``."""
        who = f"pid {self.pid}" if self.pid is not None else "a process"
        where = f" on {self.host}" if self.host else ""
        when = f", started {self.started}" if self.started else ""
        what = f" ({self.command})" if self.command else ""
        return f"{who}{where}{when}{what}"

    def is_stale(self, now: float | None = None) -> bool:
        """Whether this lease's holder is gone: a dead process of this host, or no heartbeat."""
        here = self.host == socket.gethostname() and self.pid is not None
        if here and not _process_alive(int(self.pid or 0), self.proc_start):
            return True
        if self.beat is None:
            return True
        ttl = self.ttl if self.ttl is not None else DEFAULT_TTL
        return (time.time() if now is None else now) - float(self.beat) > ttl


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _process_alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return proc_start is None or _process_start(pid) in (None, proc_start)


def _me(token: str, ttl: float | None) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["lossatlas", *sys.argv[1:]])[:300],
        "token": token,
        "ttl": ttl,
        "beat": time.time(),
        "proc_start": _process_start(pid),
    }


def _refusal(out: Location, holder: Holder | None) -> StoreLockedError:
    who = holder.describe() if holder is not None else "another process (no details recorded)"
    return StoreLockedError(
        f"{out} is in use by another lossatlas driver: {who}; wait for it to finish, or run "
        "the same command with --wait to start when it does"
    )


# --------------------------------------------------------------------------- flock (folders)


class _FileLock:
    """``flock`` on a local file; released by the kernel when the process dies.

    On a file system without ``flock`` it falls back, for good, on a lease in a file beside it.
    """

    def __init__(self, path: Path, ttl: float) -> None:
        self.path = path
        self.ttl = ttl
        self.fd: int | None = None
        self.lease: Lease | None = None
        # A command refused for bad input must leave no trace: a folder made only for the lock
        # is removed again on release if nothing else was written into it.
        self.made_folder = not path.parent.exists()

    def try_acquire(self) -> bool:
        """Take the lock if it is free."""
        if self.lease is not None:
            return self.lease.try_acquire()
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_FLOCK:
                raise
            self.lease = _folder_lease(self.path.with_name(f"{LOCK_NAME}.lease"), self.ttl)
            return self.lease.try_acquire()
        if not _same_file(fd, self.path):
            os.close(fd)  # its holder removed it on release: lock the file that is there now
            return self.try_acquire()
        self.fd = fd
        # Say who holds it; another driver reads this to name us. Written in place: only the
        # holder writes the file, and a reader that catches half of it just names no one.
        data = json.dumps(_me(uuid.uuid4().hex, None)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return True

    def holder(self) -> Holder | None:
        if self.lease is not None:
            return self.lease.holder()
        try:
            return Holder.parse(self.path.read_bytes())
        except OSError:
            return None

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
        if self.fd is None:
            return
        folder = self.path.parent
        if self.made_folder and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            # Removed while still locked; a driver waiting on this file sees that it is gone
            # (_same_file) and locks the new one, so two drivers never hold different inodes.
            with contextlib.suppress(OSError):
                self.path.unlink()
                folder.rmdir()
        os.close(self.fd)
        self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one unlinked since it was opened)."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# --------------------------------------------------------------------------- leases (URLs)


class Lease:
    """A lease with a heartbeat, in one small document (see the module docstring).

    ``read``, ``write`` and ``delete`` reach the document; ``settle`` is how long a taker waits
    before reading back the lease it wrote.
    """

    def __init__(
        self,
        read: Callable[[], bytes | None],
        write: Callable[[bytes], None],
        delete: Callable[[], None],
        *,
        ttl: float = DEFAULT_TTL,
        settle: float = 1.0,
    ) -> None:
        self._read, self._write, self._delete = read, write, delete
        self.ttl, self.settle = float(ttl), float(settle)
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._me: dict[str, Any] | None = None

    def holder(self) -> Holder | None:
        return Holder.parse(self._read())

    def try_acquire(self) -> bool:
        """Take the lease if it is free or stale; start the heartbeat."""
        current = self.holder()
        if current is not None and current.token != self.token and not current.is_stale():
            return False
        self._me = _me(self.token, self.ttl)
        self._write(json.dumps(self._me).encode())
        time.sleep(self.settle)  # another taker may have written after us: the last one wins
        current = self.holder()
        if current is None or current.token != self.token:
            return False
        self._beat = threading.Thread(target=self._heartbeat, name="lossatlas-lease", daemon=True)
        self._beat.start()
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                current = self.holder()
                if current is None or current.token != self.token:
                    self.lost = True  # taken over while we stalled; never overwrite the taker
                    return
                assert self._me is not None
                self._me["beat"] = time.time()
                self._write(json.dumps(self._me).encode())
            except Exception:
                continue  # a missed beat; the next one tries again, the ttl allows for a few

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        with contextlib.suppress(Exception):
            current = self.holder()
            if current is not None and current.token == self.token:
                self._delete()


def _url_lease(url: str, ttl: float) -> Lease:
    from lossatlas.location import put_whole

    fs, root = url_filesystem(url)
    path = f"{root.rstrip('/')}/{LOCK_NAME}"
    made = not fs.exists(root)
    fs.makedirs(root, exist_ok=True)

    def read() -> bytes | None:
        try:
            return bytes(fs.cat_file(path))
        except FileNotFoundError:
            return None

    def delete() -> None:
        fs.rm(path)
        if made and not fs.ls(root):  # a folder made only for the lease leaves no trace
            with contextlib.suppress(Exception):
                fs.rmdir(root)

    return Lease(read, lambda data: put_whole(fs, path, data), delete, ttl=ttl)


def _folder_lease(path: Path, ttl: float) -> Lease:
    from lossatlas.location import replace_file

    def read() -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    return Lease(read, lambda data: replace_file(path, data), path.unlink, ttl=ttl)


# --------------------------------------------------------------------------- the driver lock

_HELD: dict[str, int] = {}  # lock location -> depth, for re-entrant use within one process
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def driver_lock(
    out: str | Path,
    *,
    wait: bool = False,
    ttl: float = DEFAULT_TTL,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the one-driver lock of ``OUT`` for the block.

    Raises :class:`StoreLockedError` (one line naming the holder) when another driver holds
    it, unless ``wait``, which waits for it (calling ``on_wait`` once with the holder's
    description). ``ttl`` is a lease's heartbeat timeout (URLs, and folders without flock).
    Storage faults become a one-line :class:`~lossatlas.faults.StoreFault`.
    """
    location = as_location(out)
    key = str(join_location(location, LOCK_NAME))
    with _HELD_GUARD:
        depth = _HELD.get(key, 0)
        if depth:
            _HELD[key] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD[key] -= 1
        return
    lock = _open_lock(location, ttl)
    told = False
    while not _try(lock, key):
        holder = lock.holder()
        if not wait:
            raise _refusal(location, holder)
        if not told and on_wait is not None:
            on_wait(holder.describe() if holder else "another driver")
            told = True
        time.sleep(_POLL)
    with _HELD_GUARD:
        _HELD[key] = 1
    try:
        yield
    finally:
        with _HELD_GUARD:
            del _HELD[key]
        lock.release()


def _open_lock(location: Location, ttl: float) -> _FileLock | Lease:
    if is_url(location):
        return _url_lease(str(location), ttl)
    return _FileLock(Path(location) / LOCK_NAME, ttl)


def _try(lock: _FileLock | Lease, key: str) -> bool:
    """One attempt at the lock; storage faults become one line naming the lock file."""
    try:
        return lock.try_acquire()
    except OSError as exc:
        raise StoreError(fault_message(exc, "take the driver lock", key)) from exc
    except StoreError:
        raise
    except Exception as exc:  # a URL backend's own error types
        raise StoreError(f"cannot take the driver lock {key}: {describe_error(exc)}") from exc
