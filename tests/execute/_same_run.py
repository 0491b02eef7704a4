"""One tiny but complete run, and the comparison of two runs' summaries: what the executor
tests (Ray, the process pool) share."""

from __future__ import annotations

import math
from typing import Any

import pytest

from lossatlas.config import load_config
from lossatlas.studies.config import RunConfig

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
