"""Fault injection: every fault is followed by a resume, and every number is compared with an
uninterrupted run of the same command.

Faults: SIGKILL at random points (folders and ``file://`` URL stores), a damaged chunk, marker
and metadata document (then ``verify --repair``), two drivers at once, a read-only store, a
full disk (a small tmpfs) and a vanished mount (a bind mount taken away). The fast cases run in
the default suite on a shrunk smoke run (:data:`MINI`, ~15 s); ``-m slow`` adds many random
kill points, the tmpfs and the vanished mount. The module prints its ledger at the end: faults
injected, faults survived (resumed to identical numbers) and numbers compared.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lossatlas.errors import StoreError
from lossatlas.lock import LOCK_NAME
from lossatlas.store import AtlasStore
from lossatlas.verify import repair_store, verify_store

# The smoke preset shrunk to seconds: one epoch, the Horoi study only (two networks, their
# jump units, embeddings, topology, summaries and claims).
MINI = ["train.epochs=1", "wedges.enabled=false", "horoi.jump.epochs=1"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
LEDGER = {"injected": 0, "survived": 0, "numbers": 0}
_VOLATILE = {"timings", "lossatlas"}  # wall times and creation stamps differ between runs


def run_cmd(out: str | Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lossatlas", "run", "--preset", "smoke", "--out", str(out),
            *MINI, *extra]  # fmt: skip


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def _ledger(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    line = (
        f"fault suite: {LEDGER['injected']} faults injected, {LEDGER['survived']} survived "
        f"(resumed to identical numbers), {LEDGER['numbers']} numbers compared"
    )
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"\n{line}")
    target = os.environ.get("LOSSATLAS_FAULT_LEDGER")
    if target:
        Path(target).write_text(json.dumps(LEDGER))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """An uninterrupted MINI run, and how long it took."""
    out = tmp_path_factory.mktemp("faults") / "clean"
    started = time.monotonic()
    result = run(run_cmd(out))
    assert result.returncode == 0, result.stderr
    return out, time.monotonic() - started


# --------------------------------------------------------------------------- comparing


def store_numbers(out: str | Path) -> dict[str, Any]:
    """Every array (figures excepted) and every attribute but wall times, by node path."""
    store = AtlasStore.open(str(out), read_only=True)
    found: dict[str, Any] = {}
    for node in store._walk():
        if node.kind == "array" and "media_type" not in node.attrs:
            found[node.path] = store.read(node.path)
        found[f"{node.path}@attrs"] = {k: v for k, v in node.attrs.items() if k not in _VOLATILE}
    summary = Path(str(out).removeprefix("file://")) / "summary.json"
    found["summary.json"] = json.loads(summary.read_text())["claims"]
    return found


def _count(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.size)
    if isinstance(value, dict):
        return sum(_count(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count(v) for v in value)
    return 1


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def assert_same_numbers(out: str | Path, reference: Path) -> None:
    """Every number of ``out`` equals the uninterrupted run's; counts them in the ledger."""
    got, want = store_numbers(out), store_numbers(reference)
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    differing = [key for key in want if not _same(got[key], want[key])]
    assert not differing, differing[:5]
    LEDGER["numbers"] += sum(_count(v) for v in want.values())


def survived(faults: int = 1) -> None:
    """``faults`` injected faults ended in a resume to identical numbers."""
    LEDGER["survived"] += faults


def completed(out: Path) -> dict[tuple[str, str], str]:
    """``(group, unit) -> finished`` of every complete unit: what must never be lost."""
    if not (out / "atlas.zarr" / "zarr.json").exists():
        return {}
    store = AtlasStore.open(out, read_only=True)
    return {m.key: m.attrs["finished"] for m in store.markers()}


def assert_kept(out: Path, before: dict[tuple[str, str], str]) -> None:
    after = completed(out)
    assert {key: after.get(key) for key in before} == before  # nothing complete was redone


# --------------------------------------------------------------------------- SIGKILL


def kill_and_resume(out: str | Path, reference: Path, after: float, *, kills: int = 1) -> None:
    """SIGKILL the run ``after`` seconds in (``kills`` times in a row), then resume it."""
    folder = Path(str(out).removeprefix("file://"))
    killed = 0
    for _ in range(kills):
        proc = subprocess.Popen(
            run_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
        )
        time.sleep(after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            LEDGER["injected"] += 1
            killed += 1
        proc.wait()
        if (folder / "atlas.zarr" / "zarr.json").exists():
            assert verify_store(out).ok  # a kill never leaves a torn chunk, marker or document
    before = completed(folder)
    result = run(run_cmd(out))
    assert result.returncode == 0, result.stderr
    assert_kept(folder, before)
    assert_same_numbers(out, reference)
    survived(killed)  # every kill in the row is survived by the one resume


def test_sigkill_at_a_random_point_resumes(clean: tuple[Path, float], tmp_path: Path) -> None:
    reference, seconds = clean
    point = random.Random(0).uniform(0.5 * seconds, 0.9 * seconds)
    kill_and_resume(tmp_path / "killed", reference, point)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(12))
def test_sigkill_at_many_random_points(
    clean: tuple[Path, float], tmp_path: Path, trial: int
) -> None:
    """Twelve seeded random kill points over the whole run; every third is killed twice."""
    reference, seconds = clean
    point = random.Random(1000 + trial).uniform(0.3, 0.95 * seconds)
    kill_and_resume(tmp_path / "killed", reference, point, kills=2 if trial % 3 == 0 else 1)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_sigkill_on_a_url_store(clean: tuple[Path, float], tmp_path: Path, trial: int) -> None:
    """file:// URL stores write every key whole too (write-then-rename through fsspec)."""
    reference, seconds = clean
    point = random.Random(2000 + trial).uniform(0.3 * seconds, 0.95 * seconds)
    kill_and_resume(f"file://{tmp_path}/url", reference, point)


# --------------------------------------------------------------------------- damage


def _flip(path: Path, at: int = 9) -> None:
    data = bytearray(path.read_bytes())
    data[at % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_chunk_marker_and_document_are_repaired(
    clean: tuple[Path, float], tmp_path: Path
) -> None:
    reference, _ = clean
    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    root = out / "atlas.zarr"
    net = "horoi/good"
    _flip(root / net / "train" / "params" / "c" / "0" / "0")  # the network's weights
    marker = next((root / net / "jumps" / "seed0" / "_units").glob("*/zarr.json"))
    marker.write_text(marker.read_text().replace('"complete": true', '"complete": false'))
    embedding = root / net / "embed" / "seed0" / "embeddings" / "pca"
    (embedding / "zarr.json").write_text('{"zarr_format": 3,')
    LEDGER["injected"] += 3

    report = verify_store(out)
    kinds = sorted((f.kind, f.node) for f in report.findings)
    assert kinds == [
        ("chunk", f"{net}/train/params"),
        ("document", f"{net}/embed/seed0/embeddings/pca"),
        ("marker", f"{net}/jumps/seed0/_units/{marker.parent.name}"),
    ]
    groups = {group for group, _ in report.units}
    assert {f"{net}/train", f"{net}/jumps/seed0", f"{net}/embed/seed0"} <= groups
    assert not report.unowned
    # Reading the damaged weights fails with one line that names the array and its unit.
    with pytest.raises(StoreError, match=r"horoi/good/train/params.*unit 'members-0000-0001'"):
        AtlasStore.open(out, read_only=True).read(f"{net}/train/params")
    repair_store(out, report)
    before = completed(out)
    result = run(run_cmd(out))
    assert result.returncode == 0, result.stderr
    assert_kept(out, before)
    assert verify_store(out).ok
    assert_same_numbers(out, reference)
    LEDGER["survived"] += 3


# --------------------------------------------------------------------------- two drivers

# A second driver whose imports are done before it is let go, so that it reaches the lock in
# well under a second: it starts once the first driver holds the lock.
_SECOND = (
    "import json, os, sys, time\n"
    "import lossatlas.cli, lossatlas.studies.run\n"
    "lock = os.path.join(sys.argv[1], sys.argv[2])\n"
    "while True:\n"
    "    try:\n"
    "        if json.loads(open(lock).read()).get('pid') == int(sys.argv[3]): break\n"
    "    except (OSError, ValueError): pass\n"
    "    time.sleep(0.02)\n"
    "sys.argv = ['lossatlas', *sys.argv[4:]]\n"
    "lossatlas.cli.main()\n"
)


def _second_driver(out: Path, first: subprocess.Popen[bytes], *extra: str) -> Any:
    cmd = [sys.executable, "-c", _SECOND, str(out), LOCK_NAME, str(first.pid)]
    return subprocess.Popen(
        [*cmd, *run_cmd(out, *extra)[3:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=ENV,
    )  # fmt: skip


def test_two_drivers_at_once(clean: tuple[Path, float], tmp_path: Path) -> None:
    """The second is refused in one line naming the first; --wait runs after it."""
    reference, _ = clean
    out = tmp_path / "shared"
    first = subprocess.Popen(
        run_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV
    )
    refused = _second_driver(out, first)
    waiting = _second_driver(out, first, "--wait")
    _, refused_err = refused.communicate(timeout=600)
    LEDGER["injected"] += 1
    assert refused.returncode == 2
    lines = refused_err.strip().splitlines()
    assert len(lines) == 1 and f"pid {first.pid} on " in lines[0] and "started 20" in lines[0]
    assert "--wait" in lines[0] and "Traceback" not in refused_err
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    _, waited_err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, waited_err
    assert f"waiting for pid {first.pid}" in waited_err and "already complete" in waited_err
    assert_same_numbers(out, reference)
    survived()


# --------------------------------------------------------------------------- read-only store


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` seen read-only: a read-only bind mount as root (root ignores modes), else
    permissions taken away."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(modes[path] & ~0o222)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    view = folder.with_name(f"{folder.name}-ro")
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(folder), str(view)]).returncode:
        pytest.skip("cannot bind-mount a read-only view here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)]).returncode:
            pytest.skip("cannot remount a bind mount read-only here")
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)
        view.rmdir()


def _tree_state(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_read_only_store(clean: tuple[Path, float], tmp_path: Path) -> None:
    """Writers fail in one line and change nothing; readers work; made writable, it resumes."""
    reference, _ = clean
    out = tmp_path / "store"
    shutil.copytree(reference, out)
    store = AtlasStore.open(out, read_only=True)
    group = "horoi/poor/jumps/seed1"
    unit = store.completed_units(group)[0]
    (out / "atlas.zarr" / group / "_units" / unit / "zarr.json").unlink()  # one unit to redo
    state = _tree_state(out)
    with read_only(out) as view:
        result = run(run_cmd(view))
        LEDGER["injected"] += 1
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "permission denied" in lines[0], result.stderr
        assert str(view) in lines[0] and "re-running the same command resumes" in lines[0]
        for reader in (["show", str(view)], ["verify", str(view)]):
            assert run([sys.executable, "-m", "lossatlas", *reader]).returncode == 0
    assert _tree_state(out) == state  # nothing was changed, nothing lost
    result = run(run_cmd(out))
    assert result.returncode == 0, result.stderr
    assert AtlasStore.open(out, read_only=True).unit_done(group, unit)
    assert_same_numbers(out, reference)
    survived()


# --------------------------------------------------------------------------- full disk, lost mount


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here (mount -t tmpfs failed)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_disk_full_then_more_space_resumes(clean: tuple[Path, float], tmp_path: Path) -> None:
    reference, _ = clean
    with tmpfs(tmp_path / "small", "3m") as disk:
        out = disk / "run"
        result = run(run_cmd(out))
        LEDGER["injected"] += 1
        assert result.returncode == 2
        # The run's stage headers come first on stderr; the fault itself is one line.
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "no space left on device" in lines[0], result.stderr
        assert str(out) in lines[0] and "re-running the same command resumes" in lines[0]
        before = completed(out)
        assert before, "nothing completed before the disk filled: make the tmpfs larger"
        assert verify_store(out).ok  # a full disk tears nothing
        subprocess.run(["mount", "-o", "remount,size=256m", str(disk)], check=True)
        result = run(run_cmd(out))
        assert result.returncode == 0, result.stderr
        assert_kept(out, before)
        assert_same_numbers(out, reference)
        survived()


@pytest.mark.slow
def test_a_vanished_mount_then_remounted_resumes(clean: tuple[Path, float], tmp_path: Path) -> None:
    """The store's mount is taken away mid-run (a bind mount, lazily unmounted)."""
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    reference, seconds = clean
    disk, mount = tmp_path / "disk", tmp_path / "mnt"
    disk.mkdir()
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(disk), str(mount)], check=True)
    out = mount / "run"
    proc = subprocess.Popen(run_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=ENV)  # fmt: skip
    # Take the mount away once the run has completed some units but not all: wait for the
    # first marker rather than a fraction of the clean run's time, which a busy machine skews.
    deadline = time.monotonic() + 10 * seconds
    while not completed(disk / "run") and proc.poll() is None:
        assert time.monotonic() < deadline, "the run completed no unit in time"
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before the mount could be taken away"
    subprocess.run(["umount", "-l", str(mount)], check=True)
    LEDGER["injected"] += 1
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert "gone or unreachable" in lines[-1] and "remount it" in lines[-1], err
    assert "re-running the same command resumes" in lines[-1]
    assert not list(mount.iterdir())  # nothing was scattered where the mount was
    subprocess.run(["mount", "--bind", str(disk), str(mount)], check=True)
    try:
        before = completed(out)
        result = run(run_cmd(out))
        assert result.returncode == 0, result.stderr
        assert_kept(out, before)
        assert_same_numbers(out, reference)
        survived()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
