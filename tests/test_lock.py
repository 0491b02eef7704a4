"""One driver per store: flock for folders, a heartbeat lease for URLs, stale locks taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lossatlas.lock import LOCK_NAME, Holder, Lease, StoreLockedError, driver_lock

HOLD = (
    "import sys, time\n"
    "from lossatlas.lock import driver_lock\n"
    "with driver_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


def _holder(out: str, seconds: float) -> subprocess.Popen[str]:
    """Another driver: a process that takes the lock of ``out`` and holds it for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, out, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    proc.send_signal(sig)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _memory_lease(document: dict[str, bytes], **options: float) -> Lease:
    def write(data: bytes) -> None:
        document["lease"] = data

    return Lease(lambda: document.get("lease"), write, lambda: document.pop("lease"), **options)


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    with driver_lock(tmp_path), driver_lock(tmp_path):
        holder = Holder.parse((tmp_path / LOCK_NAME).read_bytes())
        assert holder is not None and holder.pid == os.getpid()
    with driver_lock(tmp_path):  # released: taken again
        pass


def test_a_second_driver_is_refused_with_one_line_naming_the_holder(tmp_path: Path) -> None:
    proc = _holder(str(tmp_path), 30)
    try:
        with pytest.raises(StoreLockedError) as info, driver_lock(tmp_path):
            pass
        message = str(info.value)
        assert f"pid {proc.pid} on {socket.gethostname()}, started 20" in message
        assert "--wait" in message and "\n" not in message
    finally:
        _stop(proc)


def test_a_killed_drivers_lock_is_taken_over(tmp_path: Path) -> None:
    _stop(_holder(str(tmp_path), 60))
    with driver_lock(tmp_path):  # the kernel dropped the flock with the process
        holder = Holder.parse((tmp_path / LOCK_NAME).read_bytes())
        assert holder is not None and holder.pid == os.getpid()


def test_wait_starts_when_the_holder_finishes(tmp_path: Path) -> None:
    proc = _holder(str(tmp_path), 1.0)
    told: list[str] = []
    started = time.monotonic()
    with driver_lock(tmp_path, wait=True, on_wait=told.append):
        waited = time.monotonic() - started  # we got it only once the holder let go
    _stop(proc)
    assert 0.9 <= waited < 20
    assert len(told) == 1 and f"pid {proc.pid}" in told[0]


def test_a_url_store_is_locked_by_a_lease(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/run"
    proc = _holder(url, 30)
    try:
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"), driver_lock(url):
            pass
    finally:
        _stop(proc, signal.SIGTERM)  # a clean exit deletes the lease
    with driver_lock(url):
        assert (tmp_path / "run" / LOCK_NAME).exists()
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released: the lease is gone


def test_a_lease_that_stopped_beating_is_taken_over_and_its_holder_notices() -> None:
    document: dict[str, bytes] = {}
    first = _memory_lease(document, ttl=0.4, settle=0.0)
    second = _memory_lease(document, ttl=0.4, settle=0.0)
    assert first.try_acquire()
    time.sleep(0.25)  # first keeps beating (every ttl / 4)
    assert not second.try_acquire()
    first._stop.set()  # the first driver stalls: no more heartbeats
    first._beat.join()  # type: ignore[union-attr]
    time.sleep(0.5)  # longer than the ttl
    assert second.try_acquire()
    first._stop.clear()
    beat = threading.Thread(target=first._heartbeat, daemon=True)
    beat.start()
    time.sleep(0.3)
    assert first.lost  # it saw the takeover and did not overwrite the new holder
    assert Holder.parse(document["lease"]).token == second.token  # type: ignore[union-attr]
    first.release()  # releasing a lost lease leaves the new holder's lease alone
    assert Holder.parse(document["lease"]).token == second.token  # type: ignore[union-attr]
    second.release()
    assert "lease" not in document


def test_a_lease_of_a_dead_process_on_this_host_is_stale_at_once() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fresh = {"pid": dead.pid, "host": socket.gethostname(), "beat": time.time(), "ttl": 3600}
    assert Holder(**fresh).is_stale()  # type: ignore[arg-type]
    other_host = {**fresh, "host": "elsewhere.example", "pid": 1}
    assert not Holder(**other_host).is_stale()  # type: ignore[arg-type]
    assert Holder(**{**other_host, "beat": time.time() - 7200}).is_stale()  # type: ignore[arg-type]
    document = {"lease": json.dumps(other_host).encode()}
    with pytest.raises(AssertionError):  # held elsewhere and beating: not ours to take
        assert _memory_lease(document, settle=0.0).try_acquire()
    document = {"lease": json.dumps(fresh).encode()}
    lease = _memory_lease(document, settle=0.0)
    assert lease.try_acquire()
    lease.release()


def test_the_cli_refuses_a_second_writer_and_names_it(tmp_path: Path) -> None:
    with driver_lock(tmp_path):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "lossatlas",
                "train",
                "--preset",
                "smoke",
                "--out",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {os.getpid()}" in lines[0] and "in use" in lines[0]
    assert not (tmp_path / "atlas.zarr").exists()  # refused before anything was written
