"""A2: cutting planes through the origin and two optima, at several radii of training.

The weight norm grows during training; in these cuts the low-loss regions should look like
radial tunnels, roughly orthogonal to each other (paper Fig 1-2). Claim ``wedge.radial_cuts``.
Every epoch's cut is a :class:`~lossatlas.stages.output.Part` on the run's executor.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

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
    step_context,
    train_subset,
)

__all__ = ["radial_cut_part", "radial_cuts_step"]


def _cut_epochs(store: AtlasStore, config: RunConfig) -> dict[int, int]:
    """epoch -> snapshot index for every requested epoch that has a snapshot (-1: final)."""
    opts = config.wedges.cuts
    every = 0
    if store.has(f"{TRAIN_GROUP}/snapshots"):
        snaps = store.array(f"{TRAIN_GROUP}/snapshots")
        if snaps.attrs.get("unit") == "epoch":
            every = int(snaps.attrs.get("every", 1))
        available = {
            e: e // every
            for e in opts.epochs
            if every and e % every == 0 and e // every < snaps.shape[1]
        }
    else:
        available = {}
    # No snapshots: cut at the end of training only.
    return dict(sorted(available.items())) or {config.train.epochs: -1}


def radial_cut_part(out: str, config_json: str, index: int) -> StageOutput:
    """One cut through the origin and the first two optima, at snapshot ``index`` (-1: final).

    Arrays ``loss`` (steps, steps), ``coords0``, ``coords1``, ``point_coords`` (3, 2); scalars
    ``weight_norm``, ``angle_deg``, ``low_loss_fraction``, ``radial_alignment``.
    """
    config = RunConfig.model_validate_json(config_json)
    opts = config.wedges.cuts
    store, dataset, model, final = step_context(out, config)
    members = min(opts.members, final.shape[0])
    data = train_subset(dataset, opts.eval_samples)
    if index < 0:
        points = final[:members]
    else:
        points = np.asarray(store.array(f"{TRAIN_GROUP}/snapshots")[:members, index])
    theta = as_tensor_like(points, dataset.x_train)
    plane = torch.stack([torch.zeros_like(theta[0]), theta[0], theta[1]])
    cut = surface_through(model, data, plane, steps=opts.steps, margin=opts.margin)
    optima_loss, _ = evaluate_points(ParamSpace(model), theta[:2], *data)
    low = cut.loss < opts.low_loss_factor * optima_loss.mean()
    coords = torch.stack(torch.meshgrid(*cut.coords, indexing="ij"), dim=-1)  # (s, s, 2)
    pc = torch.as_tensor(cut.meta["point_coords"]).to(coords)
    directions = torch.nn.functional.normalize(pc[1:] - pc[0], dim=1)  # optima from origin
    rel = torch.nn.functional.normalize(coords - pc[0], dim=-1)
    alignment = (rel @ directions.T).abs().max(dim=-1).values  # |cos| to nearest optimum ray
    cos = float(torch.nn.functional.cosine_similarity(theta[0], theta[1], dim=0))
    return StageOutput(
        arrays={
            "loss": cut.loss.cpu().numpy(),
            "coords0": cut.coords[0].cpu().numpy(),
            "coords1": cut.coords[1].cpu().numpy(),
            "point_coords": pc.cpu().numpy(),
        },
        scalars={
            "weight_norm": float(theta.norm(dim=1).mean()),
            "angle_deg": math.degrees(math.acos(max(-1.0, min(1.0, cos)))),
            "low_loss_fraction": float(low.float().mean()),
            "radial_alignment": float(alignment[low].mean()) if low.any() else float("nan"),
        },
    )


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
    """Planes through the origin and two optima, at several epochs of training.

    Every epoch's cut is a :class:`Part` (:func:`radial_cut_part`) on the run's executor.
    """
    config = RunConfig.model_validate_json(config_json)
    opts = config.wedges.cuts
    epochs_to_index = _cut_epochs(AtlasStore.open(out, create=False), config)
    parts = [
        Part(f"epoch{epoch}", radial_cut_part, (out, config_json, index))
        for epoch, index in epochs_to_index.items()
    ]
    results = run_parts(out, "wedges/radial_cuts/parts", parts, executor_for(config))
    out_arrays: dict[str, np.ndarray] = {}
    figures: dict[str, bytes] = {}
    norms, angles, fractions, alignments = [], [], [], []
    for epoch in epochs_to_index:
        result = results[f"epoch{epoch}"]
        norms.append(result.scalars["weight_norm"])
        angles.append(result.scalars["angle_deg"])
        fractions.append(result.scalars["low_loss_fraction"])
        alignments.append(result.scalars["radial_alignment"])
        for name in ("loss", "coords0", "coords1"):
            out_arrays[f"epoch{epoch}/{name}"] = result.arrays[name]
        pc = result.arrays["point_coords"]
        marks = {
            name: (float(pc[i, 0]), float(pc[i, 1]))
            for i, name in enumerate(["origin", "θ1", "θ2"])
        }
        last_cut = _stored_cut(result)
        figures[f"cut_epoch{epoch:03d}.png"] = figure_to_png(
            plot_contour(
                last_cut, marks=marks, log=True, title=f"Cut through the origin, epoch {epoch}"
            )
        )
    figures["cut_final_3d.html"] = plotly_to_html(plot_surface_3d(last_cut, log=True))
    epochs = list(epochs_to_index)
    figures["weight_norm.png"] = figure_to_png(plot_norm_growth(epochs, norms))
    measured = {
        "epochs": epochs,
        "weight_norm": norms,
        "angle_between_optima_deg": angles,
        "low_loss_fraction": fractions,
        "radial_alignment": alignments,
    }
    grows = all(b > a for a, b in itertools.pairwise(norms))
    claim = claim_maker(config)
    holds = grows and 60.0 <= angles[-1] <= 120.0 and alignments[-1] > 0.9
    record = claim(
        "wedge.radial_cuts",
        "In cuts through the origin the weight norm grows during training and the low-loss "
        "regions look like radial tunnels, roughly orthogonal to each other.",
        "qualitative (Fig 1-2): radial, roughly orthogonal low-loss tunnels; norm grows",
        measured,
        holds,
        "holds if the mean weight norm grows at every cut, the optima are 60-120 degrees apart "
        "seen from the origin at the last cut, and low-loss grid points (loss < "
        f"{opts.low_loss_factor:g} x optima's mean) have mean |cos| > 0.9 to the nearest "
        "optimum's ray from the origin",
        figures=list(figures),
    )
    out_arrays.update({"weight_norm": np.asarray(norms), "epochs": np.asarray(epochs)})
    return StageOutput(
        arrays=out_arrays,
        figures=figures,
        claims=[record],
        scalars={"angle_between_optima_deg": angles[-1], "weight_norm": norms[-1]},
    )
