"""The process-pool executor: results in order and equal to local, errors unchanged, a dead
worker is one error and the next run resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lossatlas.config import ModelConfig, load_config
from lossatlas.errors import ConfigError, DataError
from lossatlas.execute import Unit, executor_for, get_executor, processes, run_units
from lossatlas.execute.processes import ProcessExecutor
from lossatlas.models import build_model
from lossatlas.probes.curvature.dense import hessian_spectrum
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.run import overlaps, run_all
from tests import _ray_units
from tests.execute._same_run import assert_same_numbers, check_lost_unit_resumes, tiny_config


def test_results_come_back_in_order_from_two_workers() -> None:
    executor = ProcessExecutor(workers=2, progress=False)
    units = [Unit(f"u{i}", _ray_units.square, (i,), weight=1 + i % 3) for i in range(9)]
    assert executor.map(units) == [i * i for i in range(9)]
    # Two processes did the work, neither of them this one, each with one torch thread.
    pids = set(executor.map([Unit(f"p{i}", _ray_units.worker_pid) for i in range(16)]))
    assert 1 <= len(pids) <= 2
    assert os.getpid() not in pids
    assert executor.map([Unit("t", _ray_units.torch_threads)]) == [1]
    assert executor.map([]) == []


def test_worker_threads_follow_the_config() -> None:
    config = load_config(
        "smoke",
        overrides=["execution.executor=processes", "execution.cpus_per_unit=2"],
        schema=RunConfig,
    )
    executor = executor_for(config, progress=False)
    assert isinstance(executor, ProcessExecutor)
    assert executor.threads == 2
    assert executor.map([Unit("t", _ray_units.torch_threads)]) == [2]


def test_worker_count_follows_cores_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    real = processes.available_memory()
    assert real is None or real > 2**20  # /proc/meminfo read on Linux, None elsewhere
    monkeypatch.setattr(processes, "available_cores", lambda: 64)
    monkeypatch.setattr(processes, "available_memory", lambda: 10 * 2**30 + 5)
    assert ProcessExecutor().workers == 10  # memory, not the 64 cores, decides
    assert ProcessExecutor(threads=8).workers == 8
    monkeypatch.setattr(processes, "available_memory", lambda: None)  # not on Linux
    assert ProcessExecutor().workers == 64
    monkeypatch.setattr(processes, "available_memory", lambda: 2**20)
    assert ProcessExecutor().workers == 1
    config = load_config(
        "smoke",
        overrides=["execution.executor=processes", "execution.workers=3"],
        schema=RunConfig,
    )
    assert executor_for(config).workers == 3  # type: ignore[attr-defined]


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        ProcessExecutor(workers=0)
    with pytest.raises(ConfigError, match="threads per worker must be >= 1"):
        get_executor("processes", threads=0)


def test_unit_errors_reach_the_caller_unchanged(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config={"name": "errors"})
    executor = ProcessExecutor(workers=2, progress=False)
    units = [Unit("ok", _ray_units.square, (3,)), Unit("bad", _ray_units.bad_data, (7,))]
    with pytest.raises(DataError, match="unit 7: labels out of range"):
        run_units(executor, store, "g", units)
    # The unit that finished keeps its marker; the failed one has none.
    assert store.completed_units("g") == ["ok"]


def test_dead_worker_is_one_error_and_the_rerun_resumes(tmp_path: Path) -> None:
    # The pool is broken by the death; a fresh one replaces it for the re-run.
    executor = ProcessExecutor(workers=2, progress=False)
    check_lost_unit_resumes(executor, tmp_path, "'dies' was lost: a worker process died")


def _spectrum(seed: int) -> np.ndarray:
    model = build_model(ModelConfig(name="cnn1d", width=4), (40,), 10, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 40, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    return hessian_spectrum(model, (x, y)).numpy()


def test_numbers_equal_a_local_run_at_the_same_threads() -> None:
    units = [Unit(f"s{seed}", _spectrum, (seed,)) for seed in range(3)]
    pooled = ProcessExecutor(workers=2, threads=1, progress=False).map(units)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = get_executor("local", progress=False).map(units)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(pooled, local, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # two complete runs (~75 s on 2 cores); the unit-level tests above are fast
def test_a_run_on_processes_gives_the_local_summary(tmp_path: Path) -> None:
    # At the workers' one torch thread: convolutions round differently on two (docs/scaling.md).
    # The pooled run also puts the Horoi study in a process of its own (overlap_studies).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_all(tiny_config(), tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    pooled_config = tiny_config(executor="processes")
    assert overlaps(pooled_config, tmp_path / "processes")
    pooled = run_all(pooled_config, tmp_path / "processes")
    a = json.loads(local.summary.read_text())
    b = json.loads(pooled.summary.read_text())
    assert b["config"]["execution"]["executor"] == "processes"
    for summary in (a, b):  # where the units ran and when are the only differences allowed
        summary.pop("config")
        summary["lossatlas"].pop("created")
    assert assert_same_numbers(a, b) > 300
    # The parts really ran as separate, marked units.
    store = AtlasStore.open(tmp_path / "processes", create=False)
    assert len(store.completed_units("wedges/sweep/parts")) >= 5
    assert len(store.completed_units("wedges/tunnel/spectra")) == 3
