"""What the executor tests (Ray, the process pool) share: one tiny but complete run, the
comparison of two runs' summaries, and the contract for a unit whose worker dies."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from lossatlas.config import load_config
from lossatlas.errors import ExecutionError
from lossatlas.execute import Executor, Unit, run_units
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from tests import _ray_units

# A small but complete run: both studies, every step, each fanning out several units.
# One replicate of 3 networks (cuts, tunnel and 2-connectors need 3) keeps the run tiny.
TINY = [
    "train.members=3",
    "wedges.replicates=1",
    "train.members_per_unit=1",
]


def tiny_config(*extra: str, executor: str = "local") -> RunConfig:
    return load_config(
        "smoke", overrides=[*TINY, *extra, f"execution.executor={executor}"], schema=RunConfig
    )


def assert_same_numbers(a: Any, b: Any, path: str = "") -> int:
    """Every number in ``a`` equals ``b``'s to float tolerance; returns how many were compared."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        return sum(assert_same_numbers(a[k], b[k], f"{path}/{k}") for k in a)
    if isinstance(a, list):
        assert len(a) == len(b), path
        return sum(
            assert_same_numbers(x, y, f"{path}[{i}]")
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
    if isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
        return 1
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7), path
        return 1
    assert a == b, path
    return 0


def check_lost_unit_resumes(executor: Executor, out: Path, message: str) -> None:
    """A unit whose worker dies is one error line matching ``message``; the unit that finished
    keeps its marker, and a re-run runs only the lost one."""
    store = AtlasStore.open(out, config={"name": "lost"})
    dies = Unit("dies", _ray_units.die_once_marked, (str(out), "g", "ok"))
    units = [Unit("ok", _ray_units.square, (3,)), dies]
    with pytest.raises(ExecutionError, match=message) as info:
        run_units(executor, store, "g", units)
    assert "\n" not in str(info.value)
    assert store.completed_units("g") == ["ok"]
    again = [units[0], Unit("dies", _ray_units.square, (2,))]
    assert run_units(executor, store, "g", again) == ["dies"]
    assert sorted(store.completed_units("g")) == ["dies", "ok"]
