"""Tests for units, executors and resumable runs, including a SIGKILL in the middle of a run."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import lossatlas.store
from lossatlas.errors import ConfigError
from lossatlas.execute import Executor, LocalExecutor, Unit, get_executor, run_units
from lossatlas.store import AtlasStore

WORKER = Path(__file__).parents[1] / "_store_worker.py"
SRC = Path(lossatlas.store.__file__).resolve().parents[1]


def _load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_store_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered so that its functions pickle by name into worker processes.
    sys.modules.setdefault("_store_worker", module)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _pythonpath() -> str:
    """PYTHONPATH for child processes: this checkout's ``src`` first, then what was set."""
    parts = [str(SRC), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def _square(x: int) -> int:
    return x * x


def _record(log: list[str], name: str) -> str:
    log.append(name)
    return name


def _fail() -> None:
    raise RuntimeError("unit failed")


# --------------------------------------------------------------------------- executors


def test_local_executor_preserves_order() -> None:
    units = [Unit(id=f"u{i}", fn=_square, args=(i,), weight=1 + i % 3) for i in range(7)]
    assert LocalExecutor(progress=False).map(units) == [i * i for i in range(7)]


def test_local_executor_with_bar_enabled_still_returns_results() -> None:
    units = [Unit(id="a", fn=_square, args=(3,)), Unit(id="b", fn=_square, kwargs={"x": 4})]
    assert LocalExecutor(progress=True).map(units, description="squares") == [9, 16]


def test_get_executor() -> None:
    executor = get_executor("local", progress=False)
    assert isinstance(executor, LocalExecutor)
    assert isinstance(executor, Executor)
    with pytest.raises(
        ConfigError, match=r"unknown executor 'dask' \(available: local, processes, ray\)"
    ):
        get_executor("dask")
    with pytest.raises(ConfigError, match="does not accept"):
        get_executor("local", workers=4)


# --------------------------------------------------------------------------- run_units


def test_run_units_skips_completed_units(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path)
    log: list[str] = []
    units = [Unit(id=f"u-{i}", fn=_record, args=(log, f"u-{i}")) for i in range(4)]
    store.ensure_group("g")
    store.mark_done("g", "u-1")

    ran = run_units(LocalExecutor(progress=False), store, "g", units)

    assert ran == ["u-0", "u-2", "u-3"]
    assert log == ["u-0", "u-2", "u-3"]
    assert store.completed_units("g") == ["u-0", "u-1", "u-2", "u-3"]
    assert store.unit_info("g", "u-0")["seconds"] >= 0
    assert store.attrs("g")["units_total"] == 4
    assert "units" in store.timings("g")
    # A second run has nothing left to do.
    assert run_units(LocalExecutor(progress=False), store, "g", units) == []
    assert log == ["u-0", "u-2", "u-3"]


def test_run_units_failure_keeps_earlier_markers(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path)
    units = [Unit(id="ok", fn=_square, args=(2,)), Unit(id="bad", fn=_fail)]
    with pytest.raises(RuntimeError, match="unit failed"):
        run_units(LocalExecutor(progress=False), store, "g", units)
    assert store.completed_units("g") == ["ok"]


def test_run_units_rejects_duplicate_ids(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path)
    units = [Unit(id="same", fn=_square, args=(1,)), Unit(id="same", fn=_square, args=(2,))]
    with pytest.raises(ValueError, match="duplicate unit ids"):
        run_units(LocalExecutor(progress=False), store, "g", units)


class _PoolExecutor:
    """A stand-in for a distributed executor: units are pickled to fresh worker processes."""

    def map(self, units: Sequence[Unit], *, description: str = "") -> list[Any]:
        with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(unit.fn, *unit.args, **unit.kwargs) for unit in units]
            return [future.result() for future in futures]


def test_units_are_marked_by_the_process_that_ran_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spawned workers import the unit functions by module name (as a Ray worker would), with
    # the parent's sys.path.
    monkeypatch.syspath_prepend(str(WORKER.parent))
    out, log = tmp_path / "out", tmp_path / "log"
    store = AtlasStore.open(out)
    store.ensure_group(worker.GROUP)
    store.create_array(worker.ARRAY, (4, worker.WIDTH), "float64", (1, worker.WIDTH))
    units = [
        Unit(id=worker.unit_id(i), fn=worker.write_row, args=(str(out), str(log), i, 0.0))
        for i in range(4)
    ]
    assert isinstance(_PoolExecutor(), Executor)

    assert run_units(_PoolExecutor(), store, worker.GROUP, units) == [u.id for u in units]

    assert store.completed_units(worker.GROUP) == [u.id for u in units]
    expected = np.stack([worker.expected_row(i) for i in range(4)])
    np.testing.assert_array_equal(store.read(worker.ARRAY), expected)


# --------------------------------------------------------------------------- kill and resume


def _start_worker(out: Path, log: Path, n_units: int, sleep: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": _pythonpath()}
    command = [sys.executable, str(WORKER), str(out), str(log), str(n_units), str(sleep)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _logged(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _wait_for_units(proc: subprocess.Popen[bytes], log: Path, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(_logged(log)) < count:
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"worker exited early ({proc.returncode}): {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("worker made no progress within 30 s")
        time.sleep(0.01)


def test_sigkill_mid_run_resumes_without_loss_or_recompute(tmp_path: Path) -> None:
    n_units, sleep = 10, 0.25
    out, log = tmp_path / "out", tmp_path / "run1.log"

    proc = _start_worker(out, log, n_units, sleep)
    _wait_for_units(proc, log, 4)  # three units finished, the fourth is in flight
    time.sleep(sleep / 3)  # let it write the first half of its row, then kill it mid-sleep
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    store = AtlasStore.open(out, create=False)
    done = store.completed_units(worker.GROUP)
    assert 0 < len(done) < n_units
    data = store.read(worker.ARRAY)
    for index in range(n_units):
        if worker.unit_id(index) in done:
            # No unit is half-marked: a marker implies its whole row was written.
            np.testing.assert_array_equal(data[index], worker.expected_row(index))

    # Resume to completion; only unmarked units may run again.
    log2 = tmp_path / "run2.log"
    proc = _start_worker(out, log2, n_units, 0.0)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    rerun = _logged(log2)
    all_ids = [worker.unit_id(i) for i in range(n_units)]
    assert sorted(rerun) == sorted(set(all_ids) - set(done))
    assert store.completed_units(worker.GROUP) == all_ids

    # The result equals an uninterrupted run.
    fresh = tmp_path / "fresh"
    worker.run(str(fresh), str(tmp_path / "fresh.log"), n_units, 0.0)
    expected = AtlasStore.open(fresh, create=False).read(worker.ARRAY)
    np.testing.assert_array_equal(store.read(worker.ARRAY), expected)
    assert not np.isnan(expected).any()
