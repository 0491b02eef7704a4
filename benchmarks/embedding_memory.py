"""Out-of-core embedding of paper-sized jump-and-retrain samples in bounded memory.

Setup (PAPERS B1/B2): 16 trajectories (jump sizes 0.25..1.0 x 4 seeds) x 40 epochs = 640
samples of D = 1.5M float32 parameters, 3.84 GB, i.e. more than the memory goal. They are
written into an atlas store (zarr, row chunks) one trajectory at a time, so the matrix is never
whole in RAM. Then the analysis pipeline reads it back through ``AtlasStore.array``:

1. one streamed pass: the exact 640 x 640 Gram matrix plus projections on the two plane
   directions (``streamed_gram``);
2. PCA scores (``OutOfCorePCA``, 100 components) from that Gram matrix;
3. seeded PHATE with the paper's settings (``PHATEEmbedding``);
4. PCA / t-SNE / random-plane views (``embed_all``; UMAP too if installed);
5. trustworthiness, trajectory preservation and DEMaP per method (``score_embeddings``).

Goal: peak RSS (``ru_maxrss``, whole process, torch import included) <= 2 GB.

    python benchmarks/embedding_memory.py [--dim 1500000] [--block-memory-mb 512] [--keep]

The data go to a temporary folder under /tmp, deleted at the end (unless ``--keep``).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from lossatlas.analysis import (
    OutOfCorePCA,
    PHATEEmbedding,
    embed_all,
    score_embeddings,
    streamed_gram,
)
from lossatlas.analysis.embedding import available_methods
from lossatlas.store import AtlasStore

GOAL_BYTES = 2 * 10**9
SIZES = (0.25, 0.5, 0.75, 1.0)
SEEDS = (0, 1, 2, 3)
NOISE = 2e-4  # per-coordinate step of the walk; θ* has per-coordinate scale 0.05


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def gb(n: float) -> str:
    return f"{n / 1e9:5.2f} GB"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def step(name: str, fn: Callable[[], Any], log: list[tuple[str, float, int]]) -> Any:
    """Run one step; print its wall time, its CPU time (user + system: on a shared machine
    the wall time also counts waiting for a core), the peak and the current RSS."""
    start, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    log.append((name, seconds, peak_rss()))
    print(
        f"{name:34s} wall {seconds:6.1f} s  cpu {cpu:6.1f} s  "
        f"peak RSS {gb(peak_rss())}  now {gb(current_rss())}",
        flush=True,
    )
    return result


def generate(store: AtlasStore, name: str, dim: int, epochs: int, chunk_rows: int) -> dict:
    """Write the synthetic trajectories into ``store`` one trajectory (epochs x D) at a time.

    Each trajectory starts at θ* + size·d_seed (d_seed a Gaussian direction with the norm of
    θ*, as filter normalisation gives) and decays back towards θ*, along a shared low-rank
    drift (3 directions common to all trajectories, as retraining follows the same gradients)
    plus a per-trajectory mean-reverting random walk (SGD noise at a constant learning rate
    settles into a stationary cloud, so late samples of all trajectories mix). float32
    throughout, one trajectory buffer.
    """
    rng = np.random.default_rng(0)
    theta = (rng.standard_normal(dim, dtype=np.float32) * 0.05).astype(np.float32)
    norm = float(np.linalg.norm(theta))
    shared = rng.standard_normal((3, dim), dtype=np.float32) * np.float32(norm / np.sqrt(dim))
    n_rows = len(SIZES) * len(SEEDS) * epochs
    store.create_array(name, (n_rows, dim), "float32", (chunk_rows, dim))
    ids, order, size_of, seed_of = [], [], [], []
    buffer = np.empty((epochs, dim), dtype=np.float32)
    walk = np.empty(dim, dtype=np.float32)
    t = np.arange(epochs, dtype=np.float32)
    row = 0
    for seed in SEEDS:
        direction = rng.standard_normal(dim, dtype=np.float32)
        direction *= np.float32(norm / np.linalg.norm(direction))
        for size in SIZES:
            walk[:] = 0.0
            drift = np.stack([np.sin(t / 10.0), 1 - np.exp(-t / 8.0), t / epochs]) * 0.02
            for e in range(epochs):
                walk *= np.float32(0.7)
                walk += rng.standard_normal(dim, dtype=np.float32) * np.float32(NOISE)
                buffer[e] = theta + np.float32(size * np.exp(-e / 6.0)) * direction + walk
                buffer[e] += (drift[:, e].astype(np.float32) @ shared).astype(np.float32)
            store.write(name, (slice(row, row + epochs), slice(None)), buffer)
            ids += [len(ids) // epochs] * epochs
            order += list(range(epochs))
            size_of += [size] * epochs
            seed_of += [seed] * epochs
            row += epochs
    del buffer
    return {
        "theta": theta,
        "ids": np.array(ids),
        "order": np.array(order),
        "size": np.array(size_of),
        "seed": np.array(seed_of),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1_500_000, help="parameters per sample")
    parser.add_argument("--epochs", type=int, default=40, help="samples per trajectory")
    parser.add_argument("--chunk-rows", type=int, default=8, help="zarr chunk rows")
    parser.add_argument("--block-memory-mb", type=int, default=512, help="Gram-pass panel")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (shared CPU)")
    parser.add_argument("--keep", action="store_true", help="keep the zarr data in /tmp")
    args = parser.parse_args()

    log: list[tuple[str, float, int]] = []
    print(f"after imports (lossatlas imports torch): peak RSS {gb(peak_rss())}")
    folder = Path(tempfile.mkdtemp(prefix="lossatlas-embed-", dir="/tmp"))
    try:
        with threadpool_limits(limits=args.threads):
            run(args, folder, log)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    total = sum(seconds for _, seconds, _ in log[1:])
    peak = peak_rss()
    verdict = "meets" if peak <= GOAL_BYTES else "MISSES"
    print(f"analysis wall time (steps 1-5): {total:.1f} s")
    print(f"goal: peak RSS <= {gb(GOAL_BYTES)} -> {gb(peak)} ({verdict} the goal)")


def run(args: argparse.Namespace, folder: Path, log: list[tuple[str, float, int]]) -> None:
    store = AtlasStore.open(folder)
    name = "bench/params"
    meta = step(
        "0. generate + write zarr",
        lambda: generate(store, name, args.dim, args.epochs, args.chunk_rows),
        log,
    )
    X = store.array(name)
    n, dim = X.shape
    on_disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(
        f"   X: {n} x {dim:,} float32 = {gb(n * dim * 4)} in memory terms, {gb(on_disk)} on "
        f"disk, chunks {X.chunks}; block_memory {args.block_memory_mb} MiB"
    )
    theta = meta["theta"]
    rng = np.random.default_rng(1)
    # Stand-ins for the caller's filter-normalised directions: Gaussian, with the norm of θ*.
    directions = rng.standard_normal((2, dim))
    directions *= np.linalg.norm(theta) / np.linalg.norm(directions, axis=1, keepdims=True)
    block = args.block_memory_mb * 2**20

    gram = step(
        "1. streamed Gram pass",
        lambda: streamed_gram(X, vectors=directions, chunk_rows=32, block_memory=block),
        log,
    )
    # Spot-check exactness against rows read directly.
    worst = 0.0
    dist = gram.distances("euclidean")
    for i, j in ((0, n - 1), (100, 101), (5, 333)):
        a, b = (np.asarray(X[k], dtype=np.float64) for k in (i, j))
        worst = max(worst, abs(dist[i, j] - np.linalg.norm(a - b)) / np.linalg.norm(a - b))
    print(f"   Gram distances vs direct rows: max relative error {worst:.1e}")
    pca = step("2. OutOfCorePCA scores (k=100)", lambda: OutOfCorePCA(100).fit(gram), log)
    ratio = pca.explained_variance_ratio_
    print(f"   explained variance: PC1 {ratio[0]:.3f}, PC1-2 {ratio[:2].sum():.3f}")
    phate_model = step(
        "3. PHATE (paper settings, seeded)", lambda: PHATEEmbedding(random_state=0).fit(gram), log
    )
    print(f"   PHATE t = {phate_model.t_}, potential {phate_model.diff_potential_.shape}")
    others = [m for m in available_methods() if m != "phate"]
    views = step(
        f"4. {'/'.join(others)}",
        lambda: embed_all(
            gram, methods=others, center=theta, plane_directions=directions, random_state=0
        ),
        log,
    )
    embeddings = {"phate": phate_model.embedding_, **views}
    scores = step(
        "5. scores (k=10)",
        lambda: score_embeddings(
            gram, embeddings, trajectory_ids=meta["ids"], order=meta["order"], k=10
        ),
        log,
    )
    print(f"   {'method':14s} trustworthiness  trajectory  DEMaP")
    for method, row in scores.items():
        print(
            f"   {method:14s} {row['trustworthiness']:15.3f} "
            f"{row['trajectory_preservation']:11.3f} {row['demap']:6.3f}"
        )


if __name__ == "__main__":
    main()
