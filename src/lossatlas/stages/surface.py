"""The ``surface`` stage: loss on a line or plane around a trained point, with figures."""

from __future__ import annotations

import torch

from lossatlas.config import SurfaceOptions
from lossatlas.errors import StoreError
from lossatlas.plots import figure_to_png, plotly_to_html
from lossatlas.plots.surface import plot_contour, plot_line, plot_surface_3d
from lossatlas.probes.curvature import hessian_eigenpairs
from lossatlas.probes.subspace import pca_directions, surface
from lossatlas.stages.output import StageOutput
from lossatlas.stages.probes import ProbeRequest, run_probe
from lossatlas.stages.target import Target
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore

__all__ = ["compute_surface", "surface_stage"]


def _directions(target: Target, options: SurfaceOptions) -> str | torch.Tensor:
    if options.directions in ("filter", "gaussian"):
        return options.directions
    if options.directions == "eigen":
        _, vectors = hessian_eigenpairs(
            target.model,
            target.dataset.split("train"),
            k=options.dims,
            params=target.params,
            buffers=target.buffers,
        )
        return vectors
    if target.out is None:
        raise StoreError("PCA directions need a member of a trained population with snapshots")
    store = AtlasStore.open(target.out, create=False)
    if not store.has(f"{TRAIN_GROUP}/snapshots"):
        raise StoreError(
            "PCA directions need training snapshots; train with train.snapshot_every=1"
        )
    trajectory = torch.as_tensor(store.read(f"{TRAIN_GROUP}/snapshots", (target.member,)))
    return pca_directions(trajectory.to(target.params), k=options.dims, center=target.params)


def compute_surface(target: Target, options: SurfaceOptions) -> StageOutput:
    """Evaluate the surface and draw it (contour + interactive 3-D for planes)."""
    # The probe reads buffers (BatchNorm statistics) from the module: load the point's own.
    model = target.load_into_model()
    result = surface(
        model,
        target.dataset,
        center=target.params,
        directions=_directions(target, options),
        span=options.span,
        steps=options.steps,
        dims=options.dims,
        seed=options.seed,
        split=options.split,
        bn_data=target.dataset.split("train")[0] if options.bn_recompute else None,
    )
    figures: dict[str, bytes] = {}
    if options.dims == 1:
        figures["surface_line.png"] = figure_to_png(plot_line(result))
    else:
        figures["surface_contour.png"] = figure_to_png(
            plot_contour(result, marks={"θ": (0.0, 0.0)}, log=True)
        )
        figures["surface_3d.html"] = plotly_to_html(plot_surface_3d(result, log=True))
    loss = result.loss
    return StageOutput(
        arrays=result.to_arrays(),
        figures=figures,
        scalars={
            "loss_center": float(loss.flatten()[loss.numel() // 2]),
            "loss_min": float(loss.min()),
            "loss_max": float(loss.max()),
            "points": int(loss.numel()),
        },
    )


def surface_stage(
    request: ProbeRequest, options: SurfaceOptions, name: str = "default"
) -> tuple[str, bool]:
    """Run the surface probe on ``request``'s target; see :func:`run_probe`."""
    return run_probe(request, "surface", name, options, compute_surface)
