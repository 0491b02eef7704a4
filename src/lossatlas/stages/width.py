"""The ``width`` stage: tunnel width at a trained point, and optionally over its snapshots."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossatlas.config import WidthOptions
from lossatlas.errors import StoreError
from lossatlas.execute import Executor
from lossatlas.plots import figure_to_png
from lossatlas.plots.width import plot_width_distribution, plot_width_vs_norm
from lossatlas.probes.width import tunnel_width, width_over_snapshots
from lossatlas.stages.output import StageOutput
from lossatlas.stages.probes import ProbeJobs, ProbeRequest, run_probe
from lossatlas.stages.target import Target
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore

__all__ = ["compute_width", "width_stage"]

DESCRIPTION = "Tunnel width: distance along random directions until the loss rises by a threshold."


def _width_kwargs(options: WidthOptions) -> dict[str, Any]:
    return {
        "n_directions": options.n_directions,
        "threshold": options.threshold,
        "threshold_mode": options.threshold_mode,
        "direction_kind": options.direction_kind,
        "max_distance": options.max_distance,
        "initial_step": options.initial_step,
        "tol": options.tol,
        "seed": options.seed,
        "split": options.split,
        "autocast": options.autocast,
    }


def compute_width(target: Target, options: WidthOptions, jobs: ProbeJobs) -> StageOutput:
    """Width at ``target.params``; with ``options.snapshots`` also along its training run.

    ``jobs`` is unused: all directions are bracketed and bisected together as one batch, so
    there is nothing independent to fan out.
    """
    width = tunnel_width(
        target.model,
        target.dataset,
        params=target.params,
        buffers=target.buffers,
        keep_directions=False,
        **_width_kwargs(options),
    )
    output = StageOutput(
        arrays={
            "distances": width.distances.cpu().numpy(),
            "censored_mask": width.censored_mask.cpu().numpy(),
        },
        scalars={
            "mean": width.mean,
            "std": width.std,
            "weight_norm": width.weight_norm,
            "base_loss": width.base_loss,
            "threshold": width.threshold,
            "censored": width.censored,
            **_autocast_scalars(options, width.autocast_error),
        },
        figures={"width_distribution.png": figure_to_png(plot_width_distribution(width))},
    )
    if options.snapshots:
        snapshots = _training_snapshots(target)
        curve = width_over_snapshots(
            target.model,
            target.dataset,
            snapshots,
            member=target.member,
            buffers=target.buffers,
            keep_directions=False,
            **_width_kwargs(options),
        )
        output.arrays.update({f"snapshots/{k}": np.asarray(v) for k, v in curve.items()})
        output.figures["width_vs_norm.png"] = figure_to_png(
            plot_width_vs_norm({target.source: curve})
        )
    return output


def _autocast_scalars(options: WidthOptions, error: dict[str, Any] | None) -> dict[str, Any]:
    """With autocast: its dtype and the loss error against full precision at the base point and
    every ray's end (``autocast_max_abs_error``, ``autocast_max_rel_error``, ...)."""
    if options.autocast is None or error is None:
        return {}
    return {"autocast": options.autocast, **{f"autocast_{k}": v for k, v in error.items()}}


def _training_snapshots(target: Target) -> Any:
    """The (K, S, D) snapshot array of the target's training run, read lazily."""
    if target.out is None:
        raise StoreError(
            "width over training needs a member of a trained population, not a checkpoint"
        )
    store = AtlasStore.open(target.out, create=False)
    if not store.has(f"{TRAIN_GROUP}/snapshots"):
        raise StoreError(
            "no training snapshots in the store; train with "
            "train.snapshot_every=1 to track width over training"
        )
    return store.array(f"{TRAIN_GROUP}/snapshots")


def width_stage(
    request: ProbeRequest,
    options: WidthOptions,
    name: str = "default",
    *,
    executor: Executor | None = None,
) -> tuple[str, bool]:
    """Run the width probe on ``request``'s target; see :func:`run_probe`.

    ``executor`` is accepted like the other probes' but has no jobs to run (see
    :func:`compute_width`).
    """
    return run_probe(
        request, "width", name, options, compute_width, executor, description=DESCRIPTION
    )
