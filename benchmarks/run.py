"""The main job's budget: `lossatlas run --preset quick` wall time, peak memory, per-stage time.

Goal (issue 13): <= 5 min wall and <= 4 GB peak memory on 2 CPU cores. Runs the real command
in a subprocess on a fresh output folder (nothing cached), once per ``--executors`` entry, in
turn, then reads the per-step timings the store recorded. With two executors (say ``local
ray``) it prints the wall-time ratio of the first to each other, measured in the same run, and
checks that every claim's verdict agrees between them.

Peak memory is the largest *sum* of resident memory over the command's whole process tree
(Ray's raylet and workers included), sampled every 0.5 s: a multi-process run is charged for
all of its processes, not only the largest one.

    python benchmarks/run.py [--preset quick] [--executors local [processes] [ray]] [--out /tmp/...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _scaling import load
from lossatlas.store import AtlasStore

WALL_GOAL_S, RSS_GOAL_GB = 300.0, 4.0


PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Resident bytes of process ``root`` and all its descendants, read from Linux's /proc."""
    parents: dict[int, int] = {}
    pages: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            resident = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        # The command name is in parentheses and may hold spaces: fields follow the last ')'.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        pages[int(entry.name)] = resident
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return PAGE * sum(pages.get(pid, 0) for pid in tree)


def run_once(preset: str, executor: str, out: Path) -> dict[str, Any]:
    """Run the command once; its wall time, peak tree memory, stage times and verdicts."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "lossatlas", "run", "--out", str(out), "--preset", preset]
    started = time.perf_counter()
    proc = subprocess.Popen([*command, "--executor", executor], stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.5)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        sys.exit(f"lossatlas run --executor {executor} failed:\n{stderr}")
    store = AtlasStore.open(out, read_only=True)
    stages = []
    for path, _ in store.tree():
        if not path or ("/" in path and path.count("/") > 3):
            continue
        try:
            timings = store.timings(path)
        except Exception:  # arrays have attrs but no timings
            continue
        stages += [(path, stage, seconds) for stage, seconds in timings.items()]
    summary = json.loads((out / "summary.json").read_text())
    found = verdicts(summary)
    return {"wall": wall, "peak_gb": peak / 1024**3, "stages": stages, "verdicts": found}


def verdicts(node: Any) -> dict[str, str]:
    """``claim id -> verdict`` of every claim anywhere in a summary."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        if isinstance(node.get("id"), str) and isinstance(node.get("verdict"), str):
            found[node["id"]] = node["verdict"]
        for value in node.values():
            found.update(verdicts(value))
    elif isinstance(node, list):
        for value in node:
            found.update(verdicts(value))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--executors", nargs="+", default=["local"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lossatlas-bench-run"))
    args = parser.parse_args()
    print(f"load before: {load()}")
    results = {}
    for executor in args.executors:
        result = run_once(args.preset, executor, args.out / executor)
        results[executor] = result
        print(
            f"lossatlas run --preset {args.preset} --executor {executor}: wall "
            f"{result['wall']:.1f} s, peak memory (process tree) {result['peak_gb']:.2f} GB"
        )
        print("  per-stage wall time (from the store's timings):")
        for path, stage, seconds in sorted(result["stages"], key=lambda r: -r[2]):
            if seconds >= 0.5:
                print(f"    {path:45s} {stage:10s} {seconds:7.1f} s")
        ok_wall, ok_rss = result["wall"] <= WALL_GOAL_S, result["peak_gb"] <= RSS_GOAL_GB
        print(
            f"  goal: wall <= {WALL_GOAL_S:.0f} s -> {'meets' if ok_wall else 'MISSES'}; "
            f"peak <= {RSS_GOAL_GB:.0f} GB -> {'meets' if ok_rss else 'MISSES'}"
        )
        print(f"  load after: {load()}")
    first, *others = args.executors
    for other in others:
        ratio = results[first]["wall"] / results[other]["wall"]
        a, b = results[first]["verdicts"], results[other]["verdicts"]
        differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        print(
            f"{other} against {first}, same run: {ratio:.2f}x faster; "
            f"{len(a) - len(differ)} of {len(a)} verdicts agree"
            + (f"; differ: {', '.join(differ)}" if differ else "")
        )


if __name__ == "__main__":
    main()
