"""A2: cutting planes through the origin and two optima, at several radii of training.

The weight norm grows during training; in these cuts the low-loss regions should look like
radial tunnels, roughly orthogonal to each other (paper Fig 1-2). Claim ``wedge.radial_cuts``.

For every replicate and cut epoch, one :class:`~lossatlas.stages.output.Part` evaluates the
loss on the plane through the origin and the replicate's first two networks. The low-loss region
around each network is the connected set of grid points whose loss is below ``low_loss_factor``
times the two networks' mean, and its **elongation** is ``log(spread along the ray from the
origin / spread across it)``: 0 for a round basin, positive for a radial tunnel. The claim is
decided on the last cut, one value per replicate (the mean over its two regions), against round
basins of the same area on the same grid (the control).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from lossatlas.analysis.statistics import control, decide, mean_interval
from lossatlas.claims import Claim, Decision
from lossatlas.evaluate import evaluate_points
from lossatlas.execute import executor_for
from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png, plotly_to_html
from lossatlas.plots.surface import plot_contour, plot_surface_3d
from lossatlas.plots.wedges import plot_norm_growth
from lossatlas.probes.subspace import Surface, surface_through
from lossatlas.stages.output import Part, StageOutput, run_parts
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges._common import (
    as_tensor_like,
    claim_maker,
    replicate_members,
    step_context,
    train_subset,
)

__all__ = ["decide_radial_cuts", "elongation", "radial_cut_part", "radial_cuts_step"]


# --------------------------------------------------------------------------- decision


def elongation(
    loss: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray],
    optimum: np.ndarray,
    low: float,
) -> tuple[float, int, bool]:
    """The elongation of the low-loss region around ``optimum`` on a 2-D grid.

    Args:
        loss: ``(G0, G1)`` loss on the grid ``coords`` (two axes of Euclidean coordinates, the
            origin of weight space at ``(0, 0)``).
        optimum: ``(2,)`` the network's coordinates.
        low: grid points with ``loss < low`` are low-loss.

    Returns:
        ``(log(std along the ray origin -> optimum / std across it), cells, clipped)``: the
        region is the 4-connected low-loss component that holds the grid point nearest the
        optimum; ``clipped`` says it touches the grid's edge (its extent is then a lower bound).
        NaN when that point is not low-loss or the region is a single line of cells.
    """
    mask = np.asarray(loss) < low
    i = int(np.abs(coords[0] - optimum[0]).argmin())
    j = int(np.abs(coords[1] - optimum[1]).argmin())
    labels, _ = ndimage.label(mask)
    if labels[i, j] == 0:
        return math.nan, 0, False
    region = labels == labels[i, j]
    gx, gy = np.meshgrid(coords[0], coords[1], indexing="ij")
    points = np.stack([gx[region], gy[region]], axis=1)
    ray = optimum / np.linalg.norm(optimum)
    across = np.array([-ray[1], ray[0]])
    along_std, across_std = float((points @ ray).std()), float((points @ across).std())
    clipped = bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())
    if along_std <= 0 or across_std <= 0:
        return math.nan, int(region.sum()), clipped
    return math.log(along_std / across_std), int(region.sum()), clipped


def round_basins(coords: tuple[np.ndarray, np.ndarray], optima: np.ndarray) -> np.ndarray:
    """The control landscape: a round bowl at each optimum, ``min_i |p - optimum_i|^2``."""
    gx, gy = np.meshgrid(coords[0], coords[1], indexing="ij")
    grid = np.stack([gx, gy], axis=-1)
    return np.min([((grid - o) ** 2).sum(-1) for o in optima], axis=0)


def equal_area_level(bowl: np.ndarray, cells: int) -> float:
    """The level below which ``bowl`` has about ``cells`` grid points (at least one)."""
    flat = np.sort(np.asarray(bowl).ravel())
    return float(flat[min(max(cells, 1), flat.size - 1)])


def decide_radial_cuts(elongations: list[float], control_elongations: list[float]) -> Decision:
    """``wedge.radial_cuts``: the low-loss regions' elongation along the ray, above 0.

    ``control_elongations``: the same statistic on round basins of the same area at the same
    optima, on the same grid (no radial structure).
    """
    return decide(
        elongations,
        0.0,
        "above",
        "log(spread of the low-loss region along the ray from the origin / spread across it) "
        "at the last cut, mean over a replicate's two networks",
        control=control(
            "round basins of the same area at the same networks, on the same grid",
            control_elongations,
            0.0,
            "above",
        ),
    )


# --------------------------------------------------------------------------- compute


def _cut_epochs(store: AtlasStore, config: RunConfig) -> dict[int, int]:
    """epoch -> snapshot index for every requested epoch that has a snapshot (-1: final)."""
    opts = config.wedges.cuts
    every = 0
    if store.has(f"{TRAIN_GROUP}/snapshots"):
        snaps = store.array(f"{TRAIN_GROUP}/snapshots")
        attrs = store.attrs(f"{TRAIN_GROUP}/snapshots")
        if attrs.get("unit") == "epoch":
            every = int(attrs.get("every", 1))
        available = {
            e: e // every
            for e in opts.epochs
            if every and e % every == 0 and e // every < snaps.shape[1]
        }
    else:
        available = {}
    # No snapshots: cut at the end of training only.
    return dict(sorted(available.items())) or {config.train.epochs: -1}


def radial_cut_part(out: str, config_json: str, replicate: int, index: int) -> StageOutput:
    """One cut through the origin and a replicate's first two networks, at snapshot ``index``
    (-1: final).

    Arrays ``loss`` (steps, steps), ``coords0``, ``coords1``, ``point_coords`` (3, 2). Scalars
    ``weight_norm``, ``angle_deg``, ``low_loss_fraction``, ``elongation`` and
    ``control_elongation`` (per network), ``cells``, ``clipped``.
    """
    config = RunConfig.model_validate_json(config_json)
    opts = config.wedges.cuts
    store, dataset, model, final = step_context(out, config)
    members = list(replicate_members(config, replicate)[:2])
    data = train_subset(dataset, opts.eval_samples)
    if index < 0:
        points = final[members]
    else:
        points = np.asarray(store.array(f"{TRAIN_GROUP}/snapshots")[members, index])
    theta = as_tensor_like(points, dataset.x_train)
    plane = torch.stack([torch.zeros_like(theta[0]), theta[0], theta[1]])
    cut = surface_through(model, data, plane, steps=opts.steps, margin=opts.margin)
    optima_loss, _ = evaluate_points(ParamSpace(model), theta, *data)
    low = opts.low_loss_factor * float(optima_loss.mean())
    loss = cut.loss.cpu().numpy().astype(np.float64)
    coords = (cut.coords[0].cpu().numpy(), cut.coords[1].cpu().numpy())
    pc = np.asarray(cut.meta["point_coords"].cpu().numpy(), dtype=np.float64)
    found = [elongation(loss, coords, pc[i], low) for i in (1, 2)]
    bowl = round_basins(coords, pc[1:])
    level = equal_area_level(bowl, int(np.mean([f[1] for f in found])))
    controls = [elongation(bowl, coords, pc[i], level)[0] for i in (1, 2)]
    cos = float(torch.nn.functional.cosine_similarity(theta[0], theta[1], dim=0))
    return StageOutput(
        arrays={
            "loss": loss,
            "coords0": coords[0],
            "coords1": coords[1],
            "point_coords": pc,
        },
        scalars={
            "weight_norm": float(theta.norm(dim=1).mean()),
            "angle_deg": math.degrees(math.acos(max(-1.0, min(1.0, cos)))),
            "low_loss_fraction": float((loss < low).mean()),
            "elongation": [f[0] for f in found],
            "cells": [f[1] for f in found],
            "clipped": [f[2] for f in found],
            "control_elongation": controls,
        },
    )


def _init_angle(store: AtlasStore, config: RunConfig) -> list[float]:
    """Angle between each replicate's first two networks at initialisation (the reference a
    trained angle is compared with: independent inits are nearly orthogonal in high D)."""
    angles = []
    for r in range(config.wedges.replicates):
        a, b = replicate_members(config, r)[:2]
        init = np.asarray(store.read(f"{TRAIN_GROUP}/init"), dtype=np.float64)[[a, b]]
        cos = float(init[0] @ init[1] / (np.linalg.norm(init[0]) * np.linalg.norm(init[1])))
        angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return angles


def _stored_cut(result: StageOutput) -> Surface:
    """A :class:`Surface` view of a stored cut, for the plots (loss only)."""
    coords = (torch.as_tensor(result.arrays["coords0"]), torch.as_tensor(result.arrays["coords1"]))
    loss = torch.as_tensor(result.arrays["loss"])
    return Surface(
        coords,
        loss,
        torch.full_like(loss, float("nan")),
        loss.new_zeros(0),
        loss.new_zeros(2, 0),
        "points",
    )


def radial_cuts_step(out: str, config_json: str) -> StageOutput:
    """Planes through the origin and two networks of every replicate, at several epochs."""
    config = RunConfig.model_validate_json(config_json)
    store = AtlasStore.open(out, create=False)
    epochs_to_index = _cut_epochs(store, config)
    replicates = range(config.wedges.replicates)
    parts = [
        Part(f"r{r}-epoch{epoch}", radial_cut_part, (out, config_json, r, index))
        for r, (epoch, index) in itertools.product(replicates, epochs_to_index.items())
    ]
    results = run_parts(out, "wedges/radial_cuts/parts", parts, executor_for(config))
    epochs = list(epochs_to_index)
    last = epochs[-1]
    per_epoch: dict[str, list[list[Any]]] = {
        key: [[results[f"r{r}-epoch{e}"].scalars[key] for e in epochs] for r in replicates]
        for key in ("weight_norm", "angle_deg", "low_loss_fraction", "elongation")
    }
    final = [results[f"r{r}-epoch{last}"].scalars for r in replicates]
    values = [float(np.nanmean(s["elongation"])) for s in final]
    controls = [float(np.nanmean(s["control_elongation"])) for s in final]
    decision = decide_radial_cuts(values, controls)
    norms = [
        float(np.mean([row[i] for row in per_epoch["weight_norm"]])) for i in range(len(epochs))
    ]
    grows = all(b > a for a, b in itertools.pairwise(norms))

    arrays: dict[str, np.ndarray] = {"weight_norm": np.asarray(norms), "epochs": np.asarray(epochs)}
    figures: dict[str, bytes] = {}
    for epoch in epochs:
        result = results[f"r0-epoch{epoch}"]
        for name in ("loss", "coords0", "coords1"):
            arrays[f"r0/epoch{epoch}/{name}"] = result.arrays[name]
        pc = result.arrays["point_coords"]
        marks = {
            n: (float(pc[i, 0]), float(pc[i, 1])) for i, n in enumerate(["origin", "θ1", "θ2"])
        }
        figures[f"cut_epoch{epoch:03d}.png"] = figure_to_png(
            plot_contour(
                _stored_cut(result),
                marks=marks,
                log=True,
                title=f"Cut through the origin, epoch {epoch} (replicate 0)",
            )
        )
    figures["cut_final_3d.html"] = plotly_to_html(
        plot_surface_3d(_stored_cut(results[f"r0-epoch{last}"]), log=True)
    )
    figures["weight_norm.png"] = figure_to_png(plot_norm_growth(epochs, norms))
    claim = _claim(config, decision, epochs, per_epoch, final, norms, grows, store, figures)
    return StageOutput(
        arrays=arrays,
        figures=figures,
        claims=[claim],
        scalars={
            "elongation": values,
            "control_elongation": controls,
            "weight_norm": norms,
            "norm_grows": grows,
        },
    )


def _claim(
    config: RunConfig,
    decision: Decision,
    epochs: list[int],
    per_epoch: dict[str, list[list[Any]]],
    final: list[dict[str, Any]],
    norms: list[float],
    grows: bool,
    store: AtlasStore,
    figures: dict[str, bytes],
) -> Claim:
    opts = config.wedges.cuts
    angles = [s["angle_deg"] for s in final]
    return claim_maker(config)(
        "wedge.radial_cuts",
        "In cuts through the origin the weight norm grows during training and the low-loss "
        "regions look like radial tunnels, roughly orthogonal to each other.",
        "qualitative (Fig 1-2): radial, roughly orthogonal low-loss tunnels; norm grows",
        {
            "epochs": epochs,
            "elongation_by_epoch": per_epoch["elongation"],
            "low_loss_fraction_by_epoch": per_epoch["low_loss_fraction"],
            "region_cells": [s["cells"] for s in final],
            "region_clipped_by_grid": [s["clipped"] for s in final],
            "weight_norm": norms,
            "weight_norm_grows": grows,
            "angle_between_networks_deg": angles,
            "angle_at_init_deg": _init_angle(store, config),
            "angle_mean": mean_interval(angles).estimate,
        },
        decision,
        "holds if the 95% interval over replicates of the elongation at the last cut "
        "(log of the low-loss region's spread along the ray from the origin over its spread "
        f"across it; low loss: below {opts.low_loss_factor:g} x the two networks' mean loss; "
        "4-connected region around each network) lies above 0. The norm growth and the angle "
        "between the networks (beside the angle between their inits, which independent inits "
        "make nearly orthogonal anyway) are reported, not tested",
        figures=[name for name in figures if name.endswith(".png")],
    )
