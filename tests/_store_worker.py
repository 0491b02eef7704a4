"""Worker for the kill-and-resume test: runs N units that each write one row of a store array.

Usage: ``python _store_worker.py OUT LOG N SLEEP``. Each unit appends its id to LOG (so the test
can see which units were computed in which run), writes the first half of its row, sleeps, then
writes the second half, so a SIGKILL usually lands in the middle of a unit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from lossatlas.execute import LocalExecutor, Unit, run_units
from lossatlas.store import AtlasStore

GROUP = "study"
ARRAY = "study/data"
WIDTH = 64
CONFIG = {"seed": 0, "name": "kill-test"}


def expected_row(index: int) -> np.ndarray:
    """The values unit ``index`` writes: distinct per unit, so any mix-up shows."""
    return index * 1000.0 + np.arange(WIDTH, dtype=np.float64)


def write_row(out_dir: str, log: str, index: int, sleep: float) -> None:
    """One unit: log, write half a row, sleep, write the other half."""
    with open(log, "a") as handle:
        handle.write(f"{unit_id(index)}\n")
        handle.flush()
    store = AtlasStore.open(out_dir, create=False)
    row = expected_row(index)
    half = WIDTH // 2
    store.write(ARRAY, (slice(index, index + 1), slice(0, half)), row[None, :half])
    time.sleep(sleep)
    store.write(ARRAY, (slice(index, index + 1), slice(half, WIDTH)), row[None, half:])


def unit_id(index: int) -> str:
    return f"unit-{index:04d}"


def run(out_dir: str, log: str, n_units: int, sleep: float) -> list[str]:
    """Open (or resume) the store and run every unit not yet marked complete."""
    store = AtlasStore.open(out_dir, config=CONFIG)
    store.ensure_group(GROUP, fingerprint={"n_units": n_units})
    store.create_array(ARRAY, (n_units, WIDTH), "float64", (1, WIDTH))
    units = [
        Unit(id=unit_id(i), fn=write_row, args=(out_dir, log, i, sleep)) for i in range(n_units)
    ]
    return run_units(LocalExecutor(progress=False), store, GROUP, units)


if __name__ == "__main__":
    out, log_path, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    Path(log_path).touch()
    run(out, log_path, count, pause)
