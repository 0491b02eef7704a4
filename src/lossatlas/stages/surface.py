"""The ``surface`` stage: loss on a line or plane around a trained point, with figures.

The work runs as jobs on the probe's executor, in two batches:

1. ``setup/directions`` (:func:`surface_directions_part`): the ``(dims, D)`` directions, drawn
   once (filter/Gaussian from the seed, PCA of the training snapshots, or Hessian
   eigenvectors) and kept in the store, so a resumed probe evaluates its remaining rows along
   exactly the directions of the rows already done, even when they came from an iterative
   eigensolver.
2. ``rows-<start>-<stop>`` (:func:`surface_rows_part`): ``options.row_chunks`` blocks of rows
   of the grid's first axis (points of a line), each read back the stored directions and
   evaluated by :func:`~lossatlas.probes.subspace.surface` with ``rows=(start, stop)``.

The stage stacks the blocks into one surface: the same arrays, figures and scalars as one
:func:`~lossatlas.probes.subspace.surface` call over the whole grid.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossatlas.config import SurfaceOptions
from lossatlas.errors import StoreError
from lossatlas.execute import Executor
from lossatlas.plots import figure_to_png, plotly_to_html
from lossatlas.plots.surface import plot_contour, plot_line, plot_surface_3d
from lossatlas.probes.curvature import hessian_eigenpairs
from lossatlas.probes.subspace import Surface, pca_directions, surface, surface_directions
from lossatlas.stages.output import Part, StageOutput, read_output
from lossatlas.stages.probes import ProbeJobs, ProbeRequest, run_probe
from lossatlas.stages.target import Target
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore

__all__ = [
    "compute_surface",
    "row_blocks",
    "surface_directions_part",
    "surface_rows_part",
    "surface_stage",
]

DESCRIPTION = "Loss on lines and planes through the point."

# Options that say how the grid is split into jobs, not what it holds: not fingerprinted.
_RUNTIME_OPTIONS = frozenset({"row_chunks"})
_SETUP_STEP = "setup"
# With autocast, each block of rows measures its loss error against full precision.
_AUTOCAST_KEYS = ("autocast_max_abs_error", "autocast_max_rel_error", "autocast_checked_points")
_DIRECTIONS_PART = "directions"


def _directions(target: Target, options: SurfaceOptions) -> Tensor:
    """``(dims, D)`` directions of the surface at ``target.params``."""
    if options.directions in ("filter", "gaussian"):
        dirs, _ = surface_directions(
            target.space,
            target.params,
            options.directions,
            dims=options.dims,
            seed=options.seed,
        )
        return dirs
    if options.directions == "eigen":
        _, vectors = hessian_eigenpairs(
            target.model,
            target.dataset.split("train"),
            k=options.dims,
            params=target.params,
            buffers=target.buffers,
        )
        return vectors
    if target.out is None or target.member is None:
        raise StoreError("PCA directions need a member of a trained population with snapshots")
    store = AtlasStore.open(target.out, create=False)
    if not store.has(f"{TRAIN_GROUP}/snapshots"):
        raise StoreError(
            "PCA directions need training snapshots; train with train.snapshot_every=1"
        )
    trajectory = torch.as_tensor(store.read(f"{TRAIN_GROUP}/snapshots", (target.member,)))
    return pca_directions(trajectory.to(target.params), k=options.dims, center=target.params)


def surface_directions_part(request: ProbeRequest, options: SurfaceOptions) -> StageOutput:
    """The surface's directions: array ``directions`` ``(dims, D)``."""
    _, target = request.open()
    return StageOutput(arrays={"directions": _directions(target, options).cpu().numpy()})


def surface_rows_part(
    request: ProbeRequest, options: SurfaceOptions, directions_group: str, start: int, stop: int
) -> StageOutput:
    """Rows ``start:stop`` of the grid's first axis, along the directions in ``directions_group``.

    ``directions_group`` is where :func:`surface_directions_part` stored them: reading them from
    the store rather than taking them as an argument keeps the ``(dims, D)`` array out of every
    job's pickled arguments.

    Arrays: ``loss`` and ``accuracy`` ``(stop - start,)`` for a line, ``(stop - start, steps)``
    for a plane; ``coords_0`` ``(stop - start,)`` (those rows' coordinates) and, for a plane,
    ``coords_1`` ``(steps,)``.
    """
    store, target = request.open()
    stored = read_output(store, directions_group).arrays["directions"]
    directions = torch.as_tensor(np.asarray(stored)).to(target.params)
    # The probe reads buffers (BatchNorm statistics) from the module: load the point's own.
    model = target.load_into_model()
    result = surface(
        model,
        target.dataset,
        center=target.params,
        directions=directions,
        span=options.span,
        steps=options.steps,
        split=options.split,
        bn_data=target.dataset.split("train")[0] if options.bn_recompute else None,
        rows=(start, stop),
        autocast=options.autocast,
    )
    arrays = result.to_arrays()
    return StageOutput(
        arrays={k: v for k, v in arrays.items() if k not in ("center", "directions")},
        scalars={k: v for k, v in result.meta.items() if k in _AUTOCAST_KEYS},
    )


def row_blocks(steps: int, chunks: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of ``chunks`` blocks of ``steps`` rows, sizes differing by at most 1.

    At most one block per row: ``chunks`` is clipped to ``steps``.
    """
    count = max(1, min(chunks, steps))
    bounds = [i * steps // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _assemble(
    target: Target, directions: np.ndarray, label: str, blocks: list[StageOutput]
) -> Surface:
    """One :class:`Surface` from the blocks of rows (in order) along ``directions`` (n, D)."""

    def stacked(name: str) -> Tensor:
        # Blocks split the first axis only: stack them along it.
        return torch.as_tensor(np.concatenate([block.arrays[name] for block in blocks]))

    later = [torch.as_tensor(blocks[0].arrays[f"coords_{k}"]) for k in range(1, len(directions))]
    return Surface(
        (stacked("coords_0"), *later),
        stacked("loss"),
        stacked("accuracy"),
        target.params.detach().cpu(),
        torch.as_tensor(directions),
        label,
    )


def compute_surface(target: Target, options: SurfaceOptions, jobs: ProbeJobs) -> StageOutput:
    """Evaluate the surface in blocks of rows and draw it (contour + interactive 3-D for planes)."""
    setup = [Part(_DIRECTIONS_PART, surface_directions_part, (jobs.request, options))]
    directions = jobs.run(setup, step=_SETUP_STEP)[_DIRECTIONS_PART].arrays["directions"]
    directions_group = jobs.output_group(_DIRECTIONS_PART, step=_SETUP_STEP)
    blocks = row_blocks(options.steps, options.row_chunks)
    parts = [
        Part(
            f"rows-{start:04d}-{stop:04d}",
            surface_rows_part,
            (jobs.request, options, directions_group, start, stop),
            weight=stop - start,
        )
        for start, stop in blocks
    ]
    done = jobs.run(parts)
    result = _assemble(target, directions, options.directions, [done[part.id] for part in parts])
    figures: dict[str, bytes] = {}
    if options.dims == 1:
        figures["surface_line.png"] = figure_to_png(plot_line(result))
    else:
        figures["surface_contour.png"] = figure_to_png(
            plot_contour(result, marks={"θ": (0.0, 0.0)}, log=True)
        )
        figures["surface_3d.html"] = plotly_to_html(plot_surface_3d(result, log=True))
    loss = result.loss
    scalars: dict[str, Any] = {
        "loss_center": float(loss.flatten()[loss.numel() // 2]),
        "loss_min": float(loss.min()),
        "loss_max": float(loss.max()),
        "points": int(loss.numel()),
    }
    if options.autocast is not None:
        checked = [done[part.id].scalars for part in parts]
        scalars["autocast"] = options.autocast
        for key in _AUTOCAST_KEYS[:2]:  # the worst block's error
            scalars[key] = max(float(block[key]) for block in checked)
        scalars["autocast_checked_points"] = sum(int(b[_AUTOCAST_KEYS[2]]) for b in checked)
    return StageOutput(arrays=result.to_arrays(), figures=figures, scalars=scalars)


def surface_stage(
    request: ProbeRequest,
    options: SurfaceOptions,
    name: str = "default",
    *,
    executor: Executor | None = None,
) -> tuple[str, bool]:
    """Run the surface probe on ``request``'s target; see :func:`run_probe`.

    ``options.row_chunks`` is left out of the run's fingerprint: it changes how the grid is
    split into jobs, not the surface.
    """
    return run_probe(
        request,
        "surface",
        name,
        options,
        compute_surface,
        executor,
        description=DESCRIPTION,
        runtime_options=_RUNTIME_OPTIONS,
    )
