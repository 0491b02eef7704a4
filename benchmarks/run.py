"""The main job's budget: `lossatlas run --preset quick` wall time, peak RSS and per-stage time.

Goal (issue 6): <= 5 min wall and <= 4 GB peak RSS on 2 CPU cores. Runs the real command in a
subprocess on a fresh output folder (nothing cached), then reads the per-step timings the
store recorded.

    python benchmarks/run.py [--preset quick] [--out /tmp/lossatlas-bench]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lossatlas.store import AtlasStore

WALL_GOAL_S, RSS_GOAL_GB = 300.0, 4.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", type=Path, default=Path("/tmp/lossatlas-bench-run"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "lossatlas", "run", "--out", str(args.out), "--preset", args.preset],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"lossatlas run failed:\n{proc.stderr}")
    # ru_maxrss of waited-for children, in KiB on Linux: the run's own peak.
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    store = AtlasStore.open(args.out, read_only=True)
    print(f"lossatlas run --preset {args.preset}: wall {wall:.1f} s, peak RSS {peak_gb:.2f} GB")
    print("per-stage wall time (from the store's timings):")
    rows = []
    for path, _ in store.tree():
        if not path or ("/" in path and path.count("/") > 3):
            continue
        try:
            timings = store.timings(path)
        except Exception:  # arrays have attrs but no timings
            continue
        for stage, seconds in timings.items():
            rows.append((path, stage, seconds))
    for path, stage, seconds in sorted(rows, key=lambda r: -r[2]):
        if seconds >= 0.5:
            print(f"  {path:45s} {stage:10s} {seconds:7.1f} s")
    ok_wall, ok_rss = wall <= WALL_GOAL_S, peak_gb <= RSS_GOAL_GB
    print(
        f"goal: wall <= {WALL_GOAL_S:.0f} s -> {'meets' if ok_wall else 'MISSES'}; "
        f"peak RSS <= {RSS_GOAL_GB:.0f} GB -> {'meets' if ok_rss else 'MISSES'}"
    )


if __name__ == "__main__":
    main()
