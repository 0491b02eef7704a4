"""Peak memory of probes on streamed data is independent of the data set's size.

A user's ``IterableDataset`` makes seeded batches on the fly (never the whole set); lossatlas
reads it batch by batch for a 5x5 filter-normalised surface, Hessian-vector products and a
tunnel width. Each data-set size runs in a fresh subprocess, which reports the growth of its
peak RSS (``ru_maxrss``) over the RSS it had after building the model (torch import included
in the baseline; for in-memory data the baseline's peak already includes concatenating the
tensors, so its growth column can read 0: compare the process peaks). The anchor is the same
probes on the same data as in-memory ``(X, y)`` tensors, whose peak grows with the data set.
The streamed numbers equal the in-memory ones (checked in the same run).

Goal: streamed process peak flat (within 10% + 5 MB) from the smallest to the largest size.

    python benchmarks/streaming_memory.py [--sizes 25000 100000 400000] [--features 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

BATCH = 1000


class Seeded(IterableDataset):
    """``n`` samples in batches of ``BATCH``, batch ``b`` drawn from seed ``b``."""

    def __init__(self, n: int, features: int) -> None:
        self.n, self.features = n, features

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for b, start in enumerate(range(0, self.n, BATCH)):
            g = torch.Generator().manual_seed(b)
            rows = min(BATCH, self.n - start)
            y = torch.randint(0, 10, (rows,), generator=g)
            x = torch.randn(rows, self.features, generator=g) + y[:, None] * 0.1
            yield x, y


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(n: int, features: int, mode: str) -> None:
    import lossatlas

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 10))
    stream = DataLoader(Seeded(n, features), batch_size=None)
    if mode == "memory":
        xs, ys = zip(*stream, strict=True)
        data: object = (torch.cat(xs), torch.cat(ys))
        del xs, ys
    else:
        data = stream
    base = rss_mb()  # data included for "memory": we measure what the probes add on top
    data_mb = n * (features * 4 + 8) / 2**20
    surf = lossatlas.surface(model, data, steps=5, span=0.5, memory_budget_mb=32)
    op = lossatlas.HessianOperator(model, data, batch_size=BATCH)
    hv = op.matvec(torch.ones(op.dim))
    width = lossatlas.tunnel_width(model, data, n_directions=2, max_distance=10.0)
    print(
        json.dumps(
            {
                "n": n,
                "mode": mode,
                "data_mb": data_mb,
                "base_mb": base,
                "probe_growth_mb": rss_mb() - base,
                "total_peak_mb": rss_mb(),
                "centre_loss": float(surf.loss[2, 2]),
                "hv_norm": float(hv.norm()),
                "width": width.mean,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 100_000, 400_000])
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--child", nargs=2, metavar=("N", "MODE"))
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.features, args.child[1])
        return
    rows = []
    for n in args.sizes:
        for mode in ("stream", "memory"):
            cmd = [
                sys.executable,
                __file__,
                "--features",
                str(args.features),
                "--child",
                str(n),
                mode,
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    head = ("samples", "data MB", "mode", "peak growth MB", "process peak MB")
    print(f"{head[0]:>8} {head[1]:>8} {head[2]:>7} {head[3]:>21} {head[4]:>16}")
    for r in rows:
        print(
            f"{r['n']:>8} {r['data_mb']:>8.1f} {r['mode']:>7} {r['probe_growth_mb']:>21.1f} "
            f"{r['total_peak_mb']:>16.1f}"
        )
    for n in args.sizes:
        s, m = (
            next(r for r in rows if r["n"] == n and r["mode"] == k) for k in ("stream", "memory")
        )
        same = all(
            abs(s[k] - m[k]) <= 1e-4 * max(1.0, abs(m[k]))
            for k in ("centre_loss", "hv_norm", "width")
        )
        print(f"n={n}: streamed numbers equal in-memory ones: {same}")
    stream = [r["total_peak_mb"] for r in rows if r["mode"] == "stream"]
    flat = stream[-1] <= stream[0] * 1.10 + 5
    print(
        f"streamed process peak {stream[0]:.1f} -> {stream[-1]:.1f} MB over a "
        f"{args.sizes[-1] // args.sizes[0]}x larger data set: {'PASS' if flat else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
