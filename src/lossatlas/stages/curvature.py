"""The ``curvature`` stage: top Hessian eigenvalues, trace, spectral density and counts.

The four estimators are independent jobs (:class:`~lossatlas.stages.output.Part` s) on the
probe's executor; each rebuilds the target from the request and draws from its own seeded
generator, so the numbers are the same wherever and in whatever order the jobs run.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lossatlas.config import CurvatureOptions
from lossatlas.execute import Executor
from lossatlas.plots.spectrum import spectrum_html, spectrum_png
from lossatlas.probes.curvature import (
    SpectralDensity,
    count_above,
    hessian_eigenvalues,
    hessian_trace,
    spectral_density,
)
from lossatlas.seeding import make_generator
from lossatlas.stages.output import Part, StageOutput
from lossatlas.stages.probes import ProbeJobs, ProbeRequest, run_probe
from lossatlas.stages.target import Target

__all__ = [
    "compute_curvature",
    "counts_part",
    "curvature_stage",
    "density_part",
    "top_eigenvalues_part",
    "trace_part",
]

DESCRIPTION = "Hessian spectrum: top eigenvalues, trace and eigenvalue density."

# Points of the smoothed density drawn in the spectrum figures.
_DENSITY_POINTS = 400


def _open(request: ProbeRequest, options: CurvatureOptions) -> tuple[Target, tuple[Tensor, Tensor]]:
    """The target and the train samples the estimators use: ``X (N, ...)``, ``y (N,)``."""
    _, target = request.open()
    x, y = target.dataset.split("train")
    if options.eval_samples is not None:
        x, y = x[: options.eval_samples], y[: options.eval_samples]
    return target, (x, y)


def top_eigenvalues_part(request: ProbeRequest, options: CurvatureOptions) -> StageOutput:
    """The top ``k`` Hessian eigenvalues by Lanczos: array ``eigenvalues`` ``(k,)``."""
    target, data = _open(request, options)
    k = min(options.k, target.space.dim - 1)  # ARPACK needs k < D
    eigenvalues = hessian_eigenvalues(
        target.model, data, k=k, params=target.params, buffers=target.buffers
    )
    return StageOutput(arrays={"eigenvalues": eigenvalues.cpu().numpy()})


def trace_part(request: ProbeRequest, options: CurvatureOptions) -> StageOutput:
    """Hutchinson's estimate of the Hessian trace: scalar ``trace``."""
    target, data = _open(request, options)
    trace = hessian_trace(
        target.model,
        data,
        num_matvecs=options.trace_matvecs,
        generator=make_generator(options.seed, "curvature", "trace"),
        params=target.params,
        buffers=target.buffers,
    )
    return StageOutput(scalars={"trace": float(trace)})


def density_part(request: ProbeRequest, options: CurvatureOptions) -> StageOutput:
    """The SLQ spectral density: arrays ``density_nodes`` and ``density_weights`` ``(P, m)``."""
    target, data = _open(request, options)
    density = spectral_density(
        target.model,
        data,
        num_probes=options.num_probes,
        lanczos_steps=options.lanczos_steps,
        generator=make_generator(options.seed, "curvature", "slq"),
        params=target.params,
        buffers=target.buffers,
    )
    return StageOutput(
        arrays={
            "density_nodes": density.nodes.cpu().numpy(),
            "density_weights": density.weights.cpu().numpy(),
        }
    )


def counts_part(request: ProbeRequest, options: CurvatureOptions) -> StageOutput:
    """Eigenvalue counts above the thresholds: arrays ``count_thresholds``, ``counts`` ``(T,)``."""
    target, data = _open(request, options)
    counts = count_above(
        target.model,
        data,
        thresholds=options.thresholds,
        method=options.method,
        num_probes=options.num_probes,
        lanczos_steps=options.lanczos_steps,
        generator=make_generator(options.seed, "curvature", "counts"),
        params=target.params,
        buffers=target.buffers,
    )
    return StageOutput(
        arrays={
            "count_thresholds": np.asarray(list(counts), dtype=np.float64),
            "counts": np.asarray(list(counts.values()), dtype=np.float64),
        }
    )


def _parts(request: ProbeRequest, options: CurvatureOptions) -> list[Part]:
    """The four jobs, weighted by their rough number of Hessian-vector products (progress)."""
    lanczos = options.num_probes * options.lanczos_steps
    args = (request, options)
    return [
        Part("eigenvalues", top_eigenvalues_part, args, weight=3 * max(2 * options.k + 1, 20)),
        Part("trace", trace_part, args, weight=options.trace_matvecs),
        Part("density", density_part, args, weight=lanczos),
        Part("counts", counts_part, args, weight=lanczos),
    ]


def _smoothed(density: SpectralDensity, top: float) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, density)`` ``(G,)`` each: the spectrum smoothed on a grid up to past ``top``."""
    low = float(density.nodes.min())
    grid = np.linspace(min(low, 0.0) - 0.05 * abs(top), 1.05 * top, _DENSITY_POINTS)
    sigma = max(abs(top) / 200.0, 1e-6)
    return grid, density.density(grid, sigma).cpu().numpy()


def compute_curvature(target: Target, options: CurvatureOptions, jobs: ProbeJobs) -> StageOutput:
    """Everything the curvature probe measures at ``target.params``, from its four jobs."""
    done = jobs.run(_parts(jobs.request, options))
    eigenvalues = done["eigenvalues"].arrays["eigenvalues"]
    nodes, weights = (done["density"].arrays[f"density_{k}"] for k in ("nodes", "weights"))
    thresholds, counts = (done["counts"].arrays[k] for k in ("count_thresholds", "counts"))
    trace = float(done["trace"].scalars["trace"])
    density = SpectralDensity(_tensor(nodes), _tensor(weights), target.space.dim)
    top = float(eigenvalues[0])
    grid, smooth = _smoothed(density, top)
    kwargs = {"eigenvalues": eigenvalues, "thresholds": options.thresholds}
    return StageOutput(
        arrays={
            "eigenvalues": eigenvalues,
            "density_nodes": nodes,
            "density_weights": weights,
            "density_grid": grid,
            "density": smooth,
            "count_thresholds": thresholds,
            "counts": counts,
        },
        figures={
            "spectrum.png": spectrum_png(grid, smooth, **kwargs),
            "spectrum.html": spectrum_html(grid, smooth, **kwargs),
        },
        scalars={
            "top_eigenvalue": top,
            "trace": trace,
            "dim": target.space.dim,
            **{f"count_above_{t:g}": float(c) for t, c in zip(thresholds, counts, strict=True)},
        },
    )


def _tensor(values: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(values))


def curvature_stage(
    request: ProbeRequest,
    options: CurvatureOptions,
    name: str = "default",
    *,
    executor: Executor | None = None,
) -> tuple[str, bool]:
    """Run the curvature probe on ``request``'s target; see :func:`run_probe`."""
    return run_probe(
        request, "curvature", name, options, compute_curvature, executor, description=DESCRIPTION
    )
