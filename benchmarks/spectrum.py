"""The full Hessian spectrum: lossatlas ``hessian_spectrum`` against the dense autograd reference.

Setup (issue 12): ``cnn1d`` members of growing width on 512 MNIST-1D train samples, float32,
at their seeded initialisation, CPU.

* lossatlas: ``hessian_spectrum(model, (X, y))``: ``cnn1d`` is a plain layer chain, so its
  ``D`` columns come from the chain engine (hand-written forward-over-reverse on blocks of
  columns, ``probes/curvature/_chain.py``), then float64 ``eigvalsh``. The autodiff engine
  (``D`` ``torch.func`` products, the path of every other model) is timed beside it up to
  ``--reference-max-dim``.
* Reference: ``torch.autograd.functional.hessian`` of the same loss (``D`` double-backward
  passes) followed by float64 ``eigvalsh``; run only up to ``--reference-max-dim``.

Prints, per ``D``: both wall times (ours the median of ``--repeats``), their ratio, the largest
eigenvalue difference, the time of one HVP, and the process's peak RSS; then the log-log slopes
of time against ``D``, and the largest ``D`` this path affords within ``--budget-s`` seconds
and ``--budget-gb`` of memory (extrapolated along the measured slope; memory is the ``D x D``
matrix plus its float64 copy). Saves ``benchmarks/spectrum.png``.

    python benchmarks/spectrum.py [--widths 4 8 12 16 24] [--reference-max-dim 2500]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from _scaling import HERE, load, loglog_slope, save_curves, table
from lossatlas.config import DataConfig, ModelConfig
from lossatlas.data import load_dataset
from lossatlas.models import build_model
from lossatlas.params import ParamSpace
from lossatlas.probes.curvature import HessianOperator, dense_hessian, hessian_spectrum

SAMPLES, SEED, GOAL = 512, 0, 5.0


def reference_spectrum(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    space = ParamSpace(model)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(space.forward(theta, x), y)

    hessian = torch.autograd.functional.hessian(loss, space.flatten())
    return torch.linalg.eigvalsh(hessian.double())


def previous_spectrum(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What ``dense_hessian`` did before issue 12: ``torch.func.hessian`` over sample chunks of
    ``262144 // D`` samples (it vmaps over all ``D`` basis vectors at once), then eigvalsh."""
    space = ParamSpace(model)
    chunk = max(1, 262_144 // space.dim)
    theta = space.flatten()
    total = torch.zeros(space.dim, space.dim)
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            xs, ys = x[s : s + chunk], y[s : s + chunk]

            def loss(t: torch.Tensor, xs: torch.Tensor = xs, ys: torch.Tensor = ys) -> torch.Tensor:
                return F.cross_entropy(space.forward(t, xs), ys)

            total += torch.func.hessian(loss)(theta) * (xs.shape[0] / x.shape[0])
    return torch.linalg.eigvalsh(total.double())


def eigvalsh_seconds(dim: int) -> float:
    """Wall time of a float64 ``eigvalsh`` of a random symmetric ``dim x dim`` matrix."""
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    a = a + a.T
    start = time.perf_counter()
    torch.linalg.eigvalsh(a)
    return time.perf_counter() - start


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 8, 12, 16, 24])
    parser.add_argument("--reference-max-dim", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=3, help="our timing: median of these")
    parser.add_argument(
        "--previous",
        action="store_true",
        help="also time the pre-issue-12 dense path at the largest D the reference runs at",
    )
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--eig-dims", type=int, nargs="*", default=[6000, 8000])
    parser.add_argument("--budget-gb", type=float, default=4.0)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load()}")
    data = load_dataset(DataConfig())
    x, y = data.x_train[:SAMPLES], data.y_train[:SAMPLES]
    rows, dims, ours_t, ref_t, hvp_t = [], [], [], [], []
    ratio_at = None
    for width in sorted(args.widths):
        model = build_model(ModelConfig(name="cnn1d", width=width), (40,), 10, seed=SEED).eval()
        dim = ParamSpace(model).dim
        op = HessianOperator(model, (x, y), check_deterministic=False)
        v = torch.randn(dim, generator=torch.Generator().manual_seed(SEED))
        op.matvec(v)
        start = time.perf_counter()
        for _ in range(5):
            op.matvec(v)
        hvp = (time.perf_counter() - start) / 5
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = hessian_spectrum(model, (x, y))
            times.append(time.perf_counter() - start)
        ours_s = statistics.median(times)
        ref_s, gap, autodiff_s = float("nan"), float("nan"), float("nan")
        if dim <= args.reference_max_dim:
            start = time.perf_counter()
            torch.linalg.eigvalsh(dense_hessian(model, (x, y), engine="autodiff").double())
            autodiff_s = time.perf_counter() - start
            start = time.perf_counter()
            ref = reference_spectrum(model, x, y)
            ref_s = time.perf_counter() - start
            gap = float((ours - ref).abs().max())
            ref_t.append(ref_s)
            ratio_at = (dim, ref_s / ours_s, width)
        dims.append(dim)
        ours_t.append(ours_s)
        hvp_t.append(hvp)
        rows.append(
            [
                width,
                f"{dim:,}",
                f"{ours_s:.2f}",
                f"{autodiff_s:.2f}",
                f"{ref_s:.2f}",
                f"{ref_s / ours_s:.2f}x",
                f"{gap:.1e}",
                f"{hvp * 1e3:.2f}",
                f"{peak_rss_gb():.2f}",
            ]
        )
        print(f"  width {width}: D={dim}, ours {ours_s:.2f} s, reference {ref_s:.2f} s", flush=True)
    print(
        table(
            [
                "width",
                "D",
                "ours s",
                "autodiff engine s",
                "reference s",
                "ratio",
                "max |dλ|",
                "HVP ms",
                "peak RSS GB",
            ],
            rows,
        )
    )
    slope = loglog_slope(dims, ours_t)
    hvp_slope = loglog_slope(dims, hvp_t)
    print(f"slope of our time against D: {slope:.2f}; of one HVP: {hvp_slope:.2f}")
    if len(ref_t) > 1:
        print(
            "slope of the reference's time against D: "
            f"{loglog_slope(dims[: len(ref_t)], ref_t):.2f}"
        )
    # Affordable: the products' part (our time less eigvalsh) and eigvalsh each extrapolated
    # along their own measured slopes (eigvalsh also timed at --eig-dims beyond the sweep);
    # memory: the float32 matrix, its symmetrised copy and the float64 copy eigvalsh works on.
    eig_dims = sorted(set(dims) | set(args.eig_dims))
    eig_t = [eigvalsh_seconds(d) for d in eig_dims]
    print(
        table(
            ["D", "eigvalsh s"],
            [[f"{d:,}", f"{t:.2f}"] for d, t in zip(eig_dims, eig_t, strict=True)],
        )
    )
    eig_slope = loglog_slope(eig_dims[-3:], eig_t[-3:])
    products = [o - eig_t[eig_dims.index(d)] for d, o in zip(dims, ours_t, strict=True)]
    prod_slope = loglog_slope(dims, products)
    print(f"slopes: products part {prod_slope:.2f}, eigvalsh {eig_slope:.2f} (largest three sizes)")

    def predicted(dim: float) -> float:
        return (
            products[-1] * (dim / dims[-1]) ** prod_slope
            + eig_t[-1] * (dim / eig_dims[-1]) ** eig_slope
        )

    by_time = dims[-1]
    while predicted(by_time * 1.01) <= args.budget_s:
        by_time *= 1.01
    by_memory = (args.budget_gb * 2**30 / (4 + 4 + 8)) ** 0.5
    print(
        f"largest D affordable with this path: {min(by_time, by_memory):,.0f} "
        f"(time: {by_time:,.0f} within {args.budget_s:.0f} s, predicted; memory: "
        f"{by_memory:,.0f} within {args.budget_gb:g} GB)"
    )
    if args.previous and ratio_at is not None:
        dim = ratio_at[0]
        width = ratio_at[2]
        model = build_model(ModelConfig(name="cnn1d", width=width), (40,), 10, seed=SEED).eval()
        start = time.perf_counter()
        previous_spectrum(model, x, y)
        prev_s = time.perf_counter() - start
        ours_s = ours_t[dims.index(dim)]
        print(
            f"previous dense path at D={dim:,}: {prev_s:.2f} s; ours {ours_s:.2f} s -> "
            f"{prev_s / ours_s:.2f}x"
        )
    if ratio_at is not None:
        dim, ratio, _ = ratio_at
        verdict = "MEETS" if ratio >= GOAL else "MISSES"
        print(
            f"{verdict} goal: {ratio:.2f}x the dense autograd reference at D={dim:,} "
            f"(goal >= {GOAL:g}x)"
        )
    curves = {"hessian_spectrum (ours)": (dims, ours_t), "one HVP": (dims, hvp_t)}
    if ref_t:
        curves["autograd.functional.hessian + eigvalsh"] = (dims[: len(ref_t)], ref_t)
    path = save_curves(
        HERE / "spectrum.png", f"Full Hessian spectrum, cnn1d, {SAMPLES} samples", "D", curves
    )
    print(f"saved {path.name}; {load()}")


if __name__ == "__main__":
    main()
