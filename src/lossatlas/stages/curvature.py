"""The ``curvature`` stage: top Hessian eigenvalues, trace, spectral density and counts."""

from __future__ import annotations

import numpy as np

from lossatlas.config import CurvatureOptions
from lossatlas.plots.spectrum import spectrum_html, spectrum_png
from lossatlas.probes.curvature import (
    count_above,
    hessian_eigenvalues,
    hessian_trace,
    spectral_density,
)
from lossatlas.seeding import make_generator
from lossatlas.stages.output import StageOutput
from lossatlas.stages.probes import ProbeRequest, run_probe
from lossatlas.stages.target import Target

__all__ = ["compute_curvature", "curvature_stage"]


def compute_curvature(target: Target, options: CurvatureOptions) -> StageOutput:
    """Everything the curvature probe measures at ``target.params``."""
    x, y = target.dataset.split("train")
    if options.eval_samples is not None:
        x, y = x[: options.eval_samples], y[: options.eval_samples]
    common = {"params": target.params, "buffers": target.buffers}
    eigenvalues = hessian_eigenvalues(
        target.model, (x, y), k=min(options.k, target.space.dim - 1), **common
    )
    trace = hessian_trace(
        target.model,
        (x, y),
        num_matvecs=options.trace_matvecs,
        generator=make_generator(options.seed, "curvature", "trace"),
        **common,
    )
    density = spectral_density(
        target.model,
        (x, y),
        num_probes=options.num_probes,
        lanczos_steps=options.lanczos_steps,
        generator=make_generator(options.seed, "curvature", "slq"),
        **common,
    )
    counts = count_above(
        target.model,
        (x, y),
        thresholds=options.thresholds,
        method=options.method,
        num_probes=options.num_probes,
        lanczos_steps=options.lanczos_steps,
        generator=make_generator(options.seed, "curvature", "counts"),
        **common,
    )
    top = float(eigenvalues[0])
    low = float(density.nodes.min())
    grid = np.linspace(min(low, 0.0) - 0.05 * abs(top), 1.05 * top, 400)
    sigma = max(abs(top) / 200.0, 1e-6)
    smooth = density.density(grid, sigma).cpu().numpy()
    kwargs = {"eigenvalues": eigenvalues.cpu().numpy(), "thresholds": options.thresholds}
    return StageOutput(
        arrays={
            "eigenvalues": eigenvalues.cpu().numpy(),
            "density_nodes": density.nodes.cpu().numpy(),
            "density_weights": density.weights.cpu().numpy(),
            "density_grid": grid,
            "density": smooth,
            "count_thresholds": np.asarray(list(counts), dtype=np.float64),
            "counts": np.asarray(list(counts.values()), dtype=np.float64),
        },
        figures={
            "spectrum.png": spectrum_png(grid, smooth, **kwargs),
            "spectrum.html": spectrum_html(grid, smooth, **kwargs),
        },
        scalars={
            "top_eigenvalue": top,
            "trace": float(trace),
            "dim": target.space.dim,
            **{f"count_above_{t:g}": float(c) for t, c in counts.items()},
        },
    )


def curvature_stage(
    request: ProbeRequest, options: CurvatureOptions, name: str = "default"
) -> tuple[str, bool]:
    """Run the curvature probe on ``request``'s target; see :func:`run_probe`."""
    return run_probe(request, "curvature", name, options, compute_curvature)
