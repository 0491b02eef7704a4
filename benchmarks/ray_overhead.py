"""Per-unit overhead of the Ray executor against the local one, in one run.

Setup (issue 7): the real unit of the train stage (``train_unit``: a group of MLP members of the
quick preset trained for a few epochs and written to the store, then its marker). The same units
run on ``LocalExecutor`` (the anchor: in this process, one after another) and on
``RayExecutor`` against a local Ray instance with as many CPUs as one unit uses
(``num_cpus = cpus_per_unit = --threads``, default 1), so Ray also runs one unit at a time
with the same torch thread count, and the difference is the executor's cost: pickling the unit,
scheduling the task, reopening the store and the dataset in the worker, returning the result.
One thread by default leaves the second core to Ray's own processes (raylet, the driver's
polling): with two threads per unit on two cores, any background work stalls torch's thread
pool and the comparison measures contention, not the executor. The two executors alternate
within each repeat, so drift in machine load hits both.

Goal: at the default unit size (``train.members_per_unit``) the overhead stays under 10% of the
unit's work. Ray's start-up (``ray.init`` and each worker's first imports) is a one-off cost per
run and is reported separately; a warm-up unit is run on both executors before timing.

    python benchmarks/ray_overhead.py [--units 5] [--sizes 1 4 16] [--epochs 3] [--threads 1]

Prints, per unit size: the median seconds per unit on each executor, the overhead per unit and
the overhead as a share of the unit's local time. Also prints the overhead of an empty unit.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
import torch

from lossatlas.config import load_config
from lossatlas.execute import Executor, LocalExecutor, Unit, run_units
from lossatlas.execute.ray import RayExecutor
from lossatlas.stages.train import train_stage
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig

GOAL = 0.10


def noop(value: int) -> int:
    """An empty unit: what is left is the executor's own cost."""
    return value


def time_train(executor: Executor, size: int, units: int, epochs: int, folder: Path) -> float:
    """Seconds per unit for ``units`` train units of ``size`` members each."""
    config = load_config(
        "quick",
        overrides=[
            f"train.members={size * units}",
            f"train.members_per_unit={size}",
            f"train.epochs={epochs}",
            "train.snapshot_every=0",
        ],
        schema=RunConfig,
    )
    folder.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=folder))  # a fresh store per measurement: nothing skipped
    # Warm-up: the first unit pays for dataset generation (local) or worker start-up (Ray).
    warm = config.model_copy(update={"train": config.train.model_copy(update={"members": size})})
    train_stage(warm, out / "warm", executor=executor)
    started = time.perf_counter()
    train_stage(config, out / "timed", executor=executor)
    return (time.perf_counter() - started) / units


def time_noop(executor: Executor, units: int, folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    store = AtlasStore.open(tempfile.mkdtemp(dir=folder), config={"bench": 1})
    batch = [Unit(f"u{i}", noop, (i,)) for i in range(units)]
    run_units(executor, store, "warm", batch[:2])
    started = time.perf_counter()
    run_units(executor, store, "timed", batch)
    return (time.perf_counter() - started) / units


def alternate(
    repeats: int, first: Callable[[], float], second: Callable[[], float]
) -> tuple[float, float]:
    """Medians of ``first`` and ``second``, measured turn about ``repeats`` times."""
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=5, help="timed units per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per unit")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)  # the local executor runs units in this process
    started = time.perf_counter()
    ray.init(
        num_cpus=args.threads, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
    )
    print(f"ray.init: {time.perf_counter() - started:.2f} s (once per run)")
    print(f"{args.threads} torch thread(s) per unit, one unit at a time on both executors")
    local = LocalExecutor(progress=False)
    remote = RayExecutor(cpus_per_unit=args.threads, progress=False)
    started = time.perf_counter()
    remote.map([Unit("cold", noop, (0,))])
    print(f"first task (a worker process starts): {time.perf_counter() - started:.2f} s (once)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        empty_local, empty_ray = alternate(
            args.repeats,
            lambda: time_noop(local, 20, folder / "a"),
            lambda: time_noop(remote, 20, folder / "b"),
        )
        print(
            f"empty unit (store open + marker): local {empty_local * 1e3:.1f} ms, "
            f"ray {empty_ray * 1e3:.1f} ms, overhead {(empty_ray - empty_local) * 1e3:.1f} ms"
        )
        header = ("members/unit", "local s/unit", "ray s/unit", "overhead", "share")
        print(" ".join(f"{h:>13}" for h in header))
        default = load_config("quick", schema=RunConfig).train.members_per_unit
        verdict = None
        for size in args.sizes:
            t_local, t_ray = alternate(
                args.repeats,
                lambda size=size: time_train(local, size, args.units, args.epochs, folder / "l"),
                lambda size=size: time_train(remote, size, args.units, args.epochs, folder / "r"),
            )
            overhead = t_ray - t_local
            share = overhead / t_local
            print(f"{size:>13} {t_local:>13.3f} {t_ray:>13.3f} {overhead:>13.3f} {share:>13.1%}")
            if size == default:
                verdict = share
            for child in ("l", "r"):  # keep disk use small between sizes
                shutil.rmtree(folder / child, ignore_errors=True)
    if verdict is not None:
        status = "MET" if verdict < GOAL else "MISSED"
        print(f"default unit size {default}: overhead {verdict:.1%} of the unit (< 10%): {status}")
    ray.shutdown()


if __name__ == "__main__":
    main()
