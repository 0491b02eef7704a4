"""The Ray executor: same numbers as local, worker deaths retried, a killed driver resumes.

Every test runs against a real local Ray instance (``ray.init(num_cpus=2)``) started here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lossatlas.config import load_config
from lossatlas.errors import ConfigError, DataError
from lossatlas.execute import Unit, get_executor, run_units
from lossatlas.stages.train import train_stage
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.run import run_all
from tests import _ray_units
from tests.execute._same_run import (
    TINY,
    assert_same_numbers,
    check_lost_unit_resumes,
    tiny_config,
)

ray = pytest.importorskip("ray")
from lossatlas.execute.ray import RayExecutor  # noqa: E402  (after the skip: needs ray)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    # Ray pickles functions of importable modules by reference; ours live in ``tests`` which
    # its workers may not have on their path, so ship them by value.
    ray.cloudpickle.register_pickle_by_value(_ray_units)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        object_store_memory=128 * 2**20,  # small: CI containers often have a tiny /dev/shm
    )
    yield ray
    ray.shutdown()


# --------------------------------------------------------------------------- identical results


def test_run_on_ray_gives_the_local_summary(ray_instance: Any, tmp_path: Path) -> None:
    local = run_all(tiny_config(), tmp_path / "local")
    remote = run_all(tiny_config(executor="ray"), tmp_path / "ray")
    a = json.loads(local.summary.read_text())
    b = json.loads(remote.summary.read_text())
    assert b["config"]["execution"]["executor"] == "ray"
    # Where the units ran and when are the only differences allowed.
    for summary in (a, b):
        summary.pop("config")
        summary["lossatlas"].pop("created")
    assert assert_same_numbers(a, b) > 300
    # The fan-out really happened on Ray: sweep settings, connectors, tunnel curvature jobs
    # and training groups are separate, marked units.
    store = AtlasStore.open(tmp_path / "ray", create=False)
    assert len(store.completed_units("train")) == 3  # one unit per member
    assert len(store.completed_units("wedges/sweep/parts")) >= 5
    assert set(store.completed_units("wedges/tunnel/spectra")) == {
        "tunnel_r0_a",
        "tunnel_r0_b",
        "tunnel_r0_middle",
    }


# --------------------------------------------------------------------------- faults


class _KillOnceExecutor(RayExecutor):
    """Wraps every unit so that its worker dies after writing its data, before the marker."""

    def __init__(self, flag_dir: Path, **options: Any) -> None:
        super().__init__(**options)
        self.flag_dir = flag_dir

    def map(self, units: Sequence[Unit], *, description: str = "") -> list[Any]:
        wrapped = []
        for unit in units:
            out, group, inner = unit.args  # run_units hands (out, group, unit) to run_and_mark
            dying = Unit(inner.id, _ray_units.die_after_first_attempt, (str(self.flag_dir), inner))
            wrapped.append(Unit(unit.id, unit.fn, (out, group, dying), weight=unit.weight))
        return super().map(wrapped, description=description)


def test_worker_killed_mid_unit_is_retried(ray_instance: Any, tmp_path: Path) -> None:
    config = tiny_config()
    train_stage(config, tmp_path / "local")
    flags = tmp_path / "flags"
    flags.mkdir()
    summary = train_stage(
        config, tmp_path / "ray", executor=_KillOnceExecutor(flags, max_retries=2, progress=False)
    )
    # Every unit's first worker died after writing its rows; Ray re-ran each on a new worker.
    assert sorted(p.stem for p in flags.iterdir()) == sorted(summary.ran_units)
    assert len(summary.ran_units) == 3  # one unit per member
    local = AtlasStore.open(tmp_path / "local", create=False)
    remote = AtlasStore.open(tmp_path / "ray", create=False)
    # One marker per unit, and the data equals an undisturbed run: nothing lost or doubled.
    assert remote.completed_units("train") == local.completed_units("train")
    for name in ("train/params", "train/history/train_loss", "train/diverged"):
        np.testing.assert_array_equal(remote.read(name), local.read(name))


def test_unit_lost_after_retries_is_one_error_and_resumable(
    ray_instance: Any, tmp_path: Path
) -> None:
    executor = RayExecutor(max_retries=0, progress=False)
    check_lost_unit_resumes(executor, tmp_path, "'dies' was lost on Ray after its retries")


def test_unit_errors_reach_the_driver_unchanged(ray_instance: Any, tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config={"name": "errors"})
    executor = get_executor("ray", progress=False)
    assert executor.map([Unit("a", _ray_units.square, (4,)), Unit("b", _ray_units.square, (5,))])
    with pytest.raises(DataError, match="unit 7: labels out of range"):
        run_units(executor, store, "g", [Unit("bad", _ray_units.bad_data, (7,))])
    assert store.completed_units("g") == []


def test_missing_ray_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'lossatlas\[ray\]'"):
        get_executor("ray").map([Unit("a", _ray_units.square, (1,))])


def test_killed_driver_resumes_from_the_store(tmp_path: Path) -> None:
    """SIGKILL ``lossatlas train --executor ray`` after its first unit, then run it again."""
    out = tmp_path / "out"
    overrides = [*TINY, "train.members=6", "train.epochs=3"]
    cmd = [sys.executable, "-m", "lossatlas", "train", "--out", str(out), "--preset", "smoke"]
    cmd += ["--executor", "ray", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Its own session, so that the Ray processes the killed driver started can be cleaned up.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    units = out / "atlas.zarr" / "train" / "_units"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if units.is_dir() and any(units.glob("*/zarr.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the driver finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        marked_before = {p.parent.name: p.stat().st_mtime_ns for p in units.glob("*/zarr.json")}
        assert 1 <= len(marked_before) < 6
        resumed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    finally:
        _kill_session(proc.pid)
    assert resumed.returncode == 0, resumed.stderr
    assert "already complete" in resumed.stdout
    # Units finished before the kill were not recomputed ...
    for name, mtime in marked_before.items():
        assert (units / name / "zarr.json").stat().st_mtime_ns == mtime
    # ... and the result equals an uninterrupted local run.
    config = load_config("smoke", overrides=overrides, schema=RunConfig)
    train_stage(config, tmp_path / "local")
    local = AtlasStore.open(tmp_path / "local", create=False)
    remote = AtlasStore.open(out, create=False)
    assert remote.completed_units("train") == local.completed_units("train")
    np.testing.assert_array_equal(remote.read("train/params"), local.read("train/params"))


def _kill_session(session: int) -> None:
    """SIGKILL what is left of a killed driver's session (its local Ray processes)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session:
                os.kill(int(entry.name), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ray-address", "127.0.0.1:9"], "cannot reach Ray at 127.0.0.1:9"),
        (["--ray-address", "no-port"], "is not host:port"),
        (["--executor", "dask"], "invalid config: execution.executor"),
    ],
)
def test_bad_executor_options_fail_in_one_line_before_any_store(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lossatlas", "train", "--out", str(out), "--preset", "smoke"]
    result = subprocess.run([*cmd, *flags], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


# --------------------------------------------------------------------------- probes and URLs


def test_probe_jobs_on_ray_equal_local(ray_instance: Any, tmp_path: Path) -> None:
    from lossatlas.config import CurvatureOptions, SurfaceOptions
    from lossatlas.stages.curvature import curvature_stage
    from lossatlas.stages.probes import ProbeRequest
    from lossatlas.stages.surface import surface_stage

    config = tiny_config("train.members=1")
    results = {}
    for name, executor in (("local", None), ("ray", RayExecutor(progress=False))):
        out = tmp_path / name
        train_stage(config, out)
        request = ProbeRequest(out=out)
        surface_group, _ = surface_stage(
            request, SurfaceOptions(steps=7, row_chunks=3), executor=executor
        )
        curvature_group, _ = curvature_stage(
            request,
            CurvatureOptions(k=3, num_probes=2, lanczos_steps=8, trace_matvecs=6, eval_samples=64),
            executor=executor,
        )
        store = AtlasStore.open(out, create=False)
        results[name] = {
            "loss": store.read(f"{surface_group}/loss"),
            "eigenvalues": store.read(f"{curvature_group}/eigenvalues"),
            "scalars": store.attrs(curvature_group)["result"],
        }
        # Three bands of rows and four curvature jobs, each a marked unit.
        assert len(store.completed_units(f"{surface_group}/jobs")) == 3
        assert len(store.completed_units(f"{curvature_group}/jobs")) == 4
    np.testing.assert_allclose(results["ray"]["loss"], results["local"]["loss"], rtol=1e-6)
    np.testing.assert_allclose(
        results["ray"]["eigenvalues"], results["local"]["eigenvalues"], rtol=1e-6
    )
    assert_same_numbers(results["local"]["scalars"], results["ray"]["scalars"])


def test_ray_workers_share_a_url_store(ray_instance: Any, tmp_path: Path) -> None:
    config = tiny_config()
    train_stage(config, tmp_path / "local")
    url = (tmp_path / "remote").as_uri()  # file:///..., opened through zarr's FsspecStore
    summary = train_stage(config, url, executor=RayExecutor(progress=False))
    assert summary.out == url
    local = AtlasStore.open(tmp_path / "local", create=False)
    remote = AtlasStore.open(url, create=False)
    assert remote.completed_units("train") == local.completed_units("train")
    np.testing.assert_array_equal(remote.read("train/params"), local.read("train/params"))
