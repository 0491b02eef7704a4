"""The wedge study (Fort & Jastrzebski 2019, PAPERS.md part A), step by step.

:func:`run_wedges` trains the base population (the ``train`` stage), then runs six resumable
steps, each a group ``wedges/<step>`` holding its arrays, figures and claims:

==============  ====  ========================================================================
step            part  claims
==============  ====  ========================================================================
toy             A1    toy.hyperplane_threshold(_robust), toy.tunnel, toy.radial_probe
radial_cuts     A2    wedge.radial_cuts
tunnel          A3/4  wedge.linear_barrier, wedge.tunnel_low_loss, wedge.tunnel_two_blocks,
                      wedge.tunnel_label_changes, wedge.tunnel_short_dirs
connectors      A5    wedge.connector_low_loss, wedge.connector_short_dirs
sweep           A6    wedge.lr_width, wedge.lr_short_dirs, wedge.l2_width, wedge.dropout_width,
                      wedge.batch_width, wedge.width_scale
ensemble        A7    wedge.ensemble_vs_swa, wedge.ensemble_baselines
==============  ====  ========================================================================

Every claim's criterion is written down here before anything is measured; a claim that does
not hold on our setup is reported with its numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from lossatlas.evaluate import evaluate_points
from lossatlas.execute import Executor, executor_for
from lossatlas.models import build_model
from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png, plotly_to_html
from lossatlas.plots.connectors import (
    plot_deviation_cosines,
    plot_disagreement,
    plot_loss_vs_optima,
    plot_tunnel_path,
)
from lossatlas.plots.surface import plot_contour, plot_surface_3d
from lossatlas.plots.wedges import plot_counts, plot_norm_growth
from lossatlas.plots.width import plot_width_vs_norm
from lossatlas.population import train_population
from lossatlas.probes.connectors import m_connector, tunnel
from lossatlas.probes.curvature import count_above
from lossatlas.probes.ensemble import run_ensembles
from lossatlas.probes.subspace import Surface, surface_through
from lossatlas.probes.width import width_over_snapshots
from lossatlas.seeding import make_generator
from lossatlas.stages.output import Part, StageOutput, run_once, run_parts
from lossatlas.stages.train import TRAIN_GROUP, run_dataset, template_model, train_stage
from lossatlas.store import AtlasStore
from lossatlas.studies.claims import Claim
from lossatlas.studies.config import RunConfig
from lossatlas.toy.experiments import run_toy

__all__ = ["WEDGE_STEPS", "run_wedges", "step_fingerprint"]

PAPER_SETUP = "CIFAR-10 / Fashion-MNIST CNNs and MLPs (Fort & Jastrzebski 2019)"


# --------------------------------------------------------------------------- shared helpers


def _setup(config: RunConfig) -> str:
    width = config.model.width or "default"
    return (
        f"{config.data.name}, {config.model.name} (width {width}), "
        f"{config.train.optimizer} lr {config.train.lr}, {config.train.epochs} epochs"
    )


def _context(out: str, config: RunConfig) -> tuple[AtlasStore, Any, torch.nn.Module, np.ndarray]:
    """The store, the dataset, the template model and the population's final params."""
    store = AtlasStore.open(out, create=False)
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    return store, dataset, model, store.read(f"{TRAIN_GROUP}/params")


def _subset(dataset: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = dataset.split("train")
    return x[:n], y[:n]


def _counts(
    model: torch.nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    point: torch.Tensor,
    config: RunConfig,
    unit: str,
) -> dict[str, float]:
    opts = config.wedges.short_dirs
    counts = count_above(
        model,
        data,
        thresholds=opts.thresholds,
        params=point,
        method=opts.method,  # type: ignore[arg-type]
        generator=make_generator(config.seed, "short_dirs", unit),
        num_probes=opts.num_probes,
        lanczos_steps=opts.lanczos_steps,
    )
    return {f"{t:g}": float(v) for t, v in counts.items()}


def short_dirs_part(out: str, config_json: str, point: np.ndarray, unit: str) -> StageOutput:
    """Short-direction counts at ``point`` (D,), a curvature job; ``unit`` seeds its probes."""
    config = RunConfig.model_validate_json(config_json)
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    data = _subset(dataset, config.wedges.short_dirs.eval_samples)
    counts = _counts(model, data, _tensor(point, dataset.x_train), config, unit)
    return StageOutput(scalars={"counts": counts})


def _tensor(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values)).to(device=like.device, dtype=like.dtype)


def _claim(
    cid: str,
    statement: str,
    paper_value: Any,
    measured: dict[str, Any],
    holds: Any,
    config: RunConfig,
    criterion: str,
    notes: str = "",
    figures: list[str] | None = None,
) -> Claim:
    return Claim(
        id=cid,
        statement=statement,
        paper_value=paper_value,
        paper_setup=PAPER_SETUP,
        measured=measured,
        holds=None if holds is None else bool(holds),
        setup=_setup(config),
        criterion=criterion,
        notes=notes,
        figures=figures or [],
    )


def _monotone(values: list[float], sign: int) -> float:
    """Spearman correlation of ``values`` with their order, times ``sign`` (NaN-safe)."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2 or len(set(finite)) == 1:
        return float("nan")
    rho = spearmanr(range(len(values)), values).statistic
    return float(sign * rho)


# --------------------------------------------------------------------------- A1 toy


def toy_step(out: str, config_json: str) -> StageOutput:
    config = RunConfig.model_validate_json(config_json)
    result = run_toy(config.wedges.toy, seed=config.seed)
    return StageOutput(
        arrays=result.arrays, figures={**result.figures, **result.interactive}, claims=result.claims
    )


# --------------------------------------------------------------------------- A2 cuts


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
    store, dataset, model, final = _context(out, config)
    members = min(opts.members, final.shape[0])
    data = _subset(dataset, opts.eval_samples)
    if index < 0:
        points = final[:members]
    else:
        points = np.asarray(store.array(f"{TRAIN_GROUP}/snapshots")[:members, index])
    theta = _tensor(points, dataset.x_train)
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
    holds = grows and 60.0 <= angles[-1] <= 120.0 and alignments[-1] > 0.9
    claim = _claim(
        "wedge.radial_cuts",
        "In cuts through the origin the weight norm grows during training and the low-loss "
        "regions look like radial tunnels, roughly orthogonal to each other.",
        "qualitative (Fig 1-2): radial, roughly orthogonal low-loss tunnels; norm grows",
        measured,
        holds,
        config,
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
        claims=[claim],
        scalars={"angle_between_optima_deg": angles[-1], "weight_norm": norms[-1]},
    )


# --------------------------------------------------------------------------- A3/A4 tunnel


def tunnel_step(out: str, config_json: str) -> StageOutput:
    """Projected-gradient tunnel between two optima, with short directions along it."""
    config = RunConfig.model_validate_json(config_json)
    _, dataset, model, final = _context(out, config)
    theta = _tensor(final[:2], dataset.x_train)
    result = tunnel(model, dataset, theta[0], theta[1], options=config.wedges.tunnel)
    summary = result.summary("train")
    # Three independent curvature jobs, fanned out on the run's executor.
    points = {
        "endpoint_a": ("tunnel_a", theta[0]),
        "endpoint_b": ("tunnel_b", theta[1]),
        "middle": ("tunnel_middle", result.middle),
    }
    parts = [
        Part(name, short_dirs_part, (out, config_json, point.cpu().numpy(), unit))
        for name, (unit, point) in points.items()
    ]
    counted = run_parts(out, "wedges/tunnel/short_dirs", parts, executor_for(config))
    counts = {name: counted[name].scalars["counts"] for name in points}
    node_t = result.node_t.cpu().numpy()
    figures = {
        "tunnel_path.png": figure_to_png(
            plot_tunnel_path(
                result.path_t,
                result.loss_line["train"],
                result.loss_tunnel["train"],
                acc_line=result.acc_line["train"],
                acc_tunnel=result.acc_tunnel["train"],
                node_t=node_t,
            )
        ),
        "tunnel_cosines.png": figure_to_png(plot_deviation_cosines(result.cosines)),
        "tunnel_disagreement.png": figure_to_png(
            plot_disagreement(
                result.path_t,
                result.disagreement_a_line,
                result.disagreement_b_line,
                result.disagreement_a_tunnel,
                result.disagreement_b_tunnel,
                node_t=node_t,
            )
        ),
        "tunnel_short_dirs.png": figure_to_png(
            plot_counts(counts, title="Eigenvalues above threshold along the tunnel")
        ),
    }
    ends = summary["loss_endpoints"]
    blocks = result.blocks
    within = float(np.nanmean([blocks["within_first"], blocks["within_second"]]))
    mid = int((result.path_t - 0.5).abs().argmin())
    d_a = result.disagreement_a_tunnel.cpu().numpy()
    plateau = float(d_a[mid] / d_a[-1]) if d_a[-1] > 0 else float("nan")
    mean_end = {
        t: 0.5 * (counts["endpoint_a"][t] + counts["endpoint_b"][t]) for t in counts["middle"]
    }
    claims = [
        _claim(
            "wedge.linear_barrier",
            "The straight line between two independent optima crosses a high-loss wall.",
            "qualitative (Fig 1): a high barrier on the linear path",
            {
                "loss_endpoints": ends,
                "loss_line_max": summary["loss_line_max"],
                "barrier_line": summary["barrier_line"],
            },
            summary["loss_line_max"] > 2 * ends,
            config,
            "holds if the maximum train loss on the straight path exceeds twice the mean "
            "endpoint loss",
            figures=["tunnel_path.png"],
        ),
        _claim(
            "wedge.tunnel_low_loss",
            "Optimising the split points in the hyperplanes normal to the segment gives a "
            "low-loss tunnel between the optima.",
            "qualitative (Fig 3): the tunnel stays near the endpoints' loss",
            {
                "barrier_line": summary["barrier_line"],
                "barrier_tunnel": summary["barrier_tunnel"],
                "loss_tunnel_max": summary["loss_tunnel_max"],
                "acc_tunnel_min": float(result.acc_tunnel["train"].min()),
            },
            summary["barrier_tunnel"] < 0.25 * summary["barrier_line"],
            config,
            "holds if the tunnel's barrier (max loss minus the endpoints' mean) is below a "
            "quarter of the straight path's barrier",
            figures=["tunnel_path.png"],
        ),
        _claim(
            "wedge.tunnel_two_blocks",
            "The deviation vectors of the split points form two blocks: similar within the "
            "first and second half, nearly orthogonal across.",
            {"within_block_cos": "≈ 0.6-1", "across_block_cos": "≈ 0"},
            {**blocks, "cosines": result.cosines},
            within >= 0.5 and blocks["across"] <= 0.3,
            config,
            "holds if the mean within-block cosine is >= 0.5 and the across-block mean is <= 0.3",
            figures=["tunnel_cosines.png"],
        ),
        _claim(
            "wedge.tunnel_label_changes",
            "Independent optima disagree on many test labels; along the path the labels "
            "change roughly linearly up to the middle, then stay.",
            {"endpoint_disagreement": "≈ 0.25", "peak_on_path": "≈ 0.40"},
            {
                "endpoint_disagreement": result.disagreement_endpoints,
                "line_peak_a": float(result.disagreement_a_line.max()),
                "tunnel_peak_a": float(result.disagreement_a_tunnel.max()),
                "tunnel_mid_over_end_a": plateau,
            },
            0.1 <= result.disagreement_endpoints <= 0.5 and plateau >= 0.7,
            config,
            "holds if the endpoints disagree on 10-50% of test labels and, along the tunnel, "
            "the disagreement with endpoint a at the middle is >= 70% of its final value",
            figures=["tunnel_disagreement.png"],
        ),
        _claim(
            "wedge.tunnel_short_dirs",
            "The number of short directions (Hessian eigenvalues above a threshold) is "
            "higher at the middle of the tunnel than at its ends.",
            {
                "> 0.03": {"ends": "280-300", "middle": 845},
                "> 0.05": {"ends": 75, "middle": 375},
                "> 0.1": {"ends": 15, "middle": 100},
            },
            counts,
            all(
                counts["middle"][t] > mean_end[t] for t in ("0.03", "0.05", "0.1") if t in mean_end
            ),
            config,
            "holds if the middle's count exceeds the endpoints' mean count at thresholds "
            "0.03, 0.05 and 0.1",
            notes=f"counts by {config.wedges.short_dirs.method} "
            "(exact dense Hessian for small D, SLQ estimate D x mass above otherwise) on "
            f"{config.wedges.short_dirs.eval_samples} train samples",
            figures=["tunnel_short_dirs.png"],
        ),
    ]
    arrays = {k: v for k, v in result.to_arrays().items()}
    return StageOutput(arrays=arrays, figures=figures, claims=claims, scalars=summary)


# --------------------------------------------------------------------------- A5 connectors


def connector_part(out: str, config_json: str, m: int) -> StageOutput:
    """One m-connector over the first m+1 optima, and the short directions at its middle."""
    config = RunConfig.model_validate_json(config_json)
    _, dataset, model, final = _context(out, config)
    points = _tensor(final[: m + 1], dataset.x_train)
    conn = m_connector(model, dataset, points, options=config.wedges.connect.options)
    data = _subset(dataset, config.wedges.short_dirs.eval_samples)
    return StageOutput(
        arrays={"loss_samples_train": conn.loss_samples["train"].cpu().numpy()},
        scalars={
            "summary": conn.summary("train"),
            "counts": _counts(model, data, conn.middle, config, f"connector{m}"),
        },
    )


def connectors_step(out: str, config_json: str) -> StageOutput:
    """m-connectors over the first m+1 optima for m = 1 .. max_m, one part per m."""
    config = RunConfig.model_validate_json(config_json)
    opts = config.wedges.connect
    members = AtlasStore.open(out, create=False).array(f"{TRAIN_GROUP}/params").shape[0]
    ms = list(range(1, min(opts.max_m, members - 1) + 1))
    parts = [Part(f"m{m}", connector_part, (out, config_json, m), weight=m + 1) for m in ms]
    results = run_parts(out, "wedges/connectors/parts", parts, executor_for(config))
    samples, optima, hull, counts = [], [], [], {}
    arrays: dict[str, np.ndarray] = {}
    for m in ms:
        result = results[f"m{m}"]
        s = result.scalars["summary"]
        samples.append(s["loss_samples_mean"])
        optima.append(s["loss_optima_mean"])
        hull.append(s["loss_hull_mean"])
        counts[f"m{m}"] = result.scalars["counts"]
        arrays[f"m{m}/loss_samples_train"] = result.arrays["loss_samples_train"]
    figures = {
        "connector_loss.png": figure_to_png(
            plot_loss_vs_optima(
                ms, {"connector samples": samples, "optima": optima, "straight hull": hull}
            )
        ),
        "connector_short_dirs.png": figure_to_png(
            plot_counts(counts, title="Eigenvalues above threshold at the connector's centre")
        ),
    }
    at_003 = [counts[f"m{m}"].get("0.03", float("nan")) for m in ms]
    claims = [
        _claim(
            "wedge.connector_low_loss",
            "Points optimised in the complement of the optima's affine span join m+1 optima "
            "with a low-loss connector.",
            "verified up to m = 10 optima (§4.3)",
            {
                "m": ms,
                "loss_samples_mean": samples,
                "loss_optima_mean": optima,
                "loss_hull_mean": hull,
            },
            all(s <= 2 * o for s, o in zip(samples, optima, strict=True)),
            config,
            "holds if, for every m, the mean train loss over Dirichlet samples on the "
            "connector is at most twice the optima's mean",
            figures=["connector_loss.png"],
            notes=f"connector shape: {opts.options.shape}",
        ),
        _claim(
            "wedge.connector_short_dirs",
            "Short directions at the connector's middle grow with the number of optima.",
            {"1": 240, "2": 570, "3": 980, "4": 1155, "5": 1065},
            {"m": ms, "count_above_0.03": at_003, "counts": counts},
            _monotone(at_003, +1) > 0 if len(ms) > 1 else None,
            config,
            "holds if the count above 0.03 has positive Spearman correlation with m "
            "(undecided with a single m)",
            figures=["connector_short_dirs.png"],
        ),
    ]
    arrays.update({"m": np.asarray(ms), "loss_samples_mean": np.asarray(samples)})
    return StageOutput(arrays=arrays, figures=figures, claims=claims)


# --------------------------------------------------------------------------- A6 sweep


_CURVE_KEYS = ("weight_norm", "width_mean", "width_std", "censored")


def _sweep_settings(config: RunConfig) -> dict[str, tuple[str, list[float]]]:
    """part id -> (axis, values): one vectorised population per part.

    LR and L2 are per-member hyperparameters, so each is one population with a member per
    value; dropout, batch size and width change the model or the batching, one run each.
    """
    sweep = config.wedges.sweep
    settings: dict[str, tuple[str, list[float]]] = {
        "lr": ("lr", list(sweep.lrs)),
        "l2": ("l2", list(sweep.l2s)),
    }
    for axis, values in (
        ("dropout", sweep.dropouts),
        ("batch", sweep.batch_sizes),
        ("width", sweep.width_multipliers),
    ):
        for k, value in enumerate(values):
            settings[f"{axis}-{k}"] = (axis, [float(value)])
    return settings


def sweep_part(out: str, config_json: str, part_id: str) -> StageOutput:
    """Train one sweep setting and measure tunnel width against R at every epoch.

    Arrays ``<value>/<curve key>`` per member that did not diverge; scalars ``values``,
    ``final_width`` (NaN for diverged members) and, for the LR part, short-direction
    ``counts`` per LR.
    """
    config = RunConfig.model_validate_json(config_json)
    sweep = config.wedges.sweep
    axis, values = _sweep_settings(config)[part_id]
    dataset = run_dataset(config)
    data = _subset(dataset, sweep.eval_samples)
    changes = {"dropout": {"dropout": values[0]}, "width": {"width_multiplier": values[0]}}
    model = build_model(
        config.model.model_copy(update=changes.get(axis, {})),
        dataset.input_shape,
        dataset.num_classes,
        seed=config.seed,
    ).to(device=dataset.x_train.device, dtype=dataset.x_train.dtype)
    hyper: dict[str, Any] = {
        "lr": {"lr": values},
        "l2": {"weight_decay": values},
        "batch": {"batch_size": int(values[0])},
    }.get(axis, {})
    # The swept hyperparameter replaces its base value (LR, batch size) or adds to them (L2).
    settings = {"batch_size": config.train.batch_size, "lr": sweep.base_lr, **hyper}
    pop = train_population(
        model,
        dataset.split("train"),
        members=len(values),
        epochs=sweep.epochs,
        seed=config.seed,
        optimizer=config.train.optimizer,
        momentum=config.train.momentum,
        snapshot_every=1,
        start="shared",
        **settings,
    )
    width_kw = sweep.width.model_dump(exclude={"snapshots", "split"})
    width_kw["seed"] = config.seed
    arrays: dict[str, np.ndarray] = {}
    finals: list[float] = []
    counts: dict[str, dict[str, float]] = {}
    for k, value in enumerate(values):
        if bool(pop.diverged[k]):
            finals.append(float("nan"))
            continue
        curve = width_over_snapshots(
            model, data, pop.snapshots[k], keep_directions=False, **width_kw
        )
        finals.append(float(curve["width_mean"][-1]))
        for key in _CURVE_KEYS:
            if key in curve:
                arrays[f"{value:g}/{key}"] = np.asarray(curve[key])
        if axis == "lr":
            counts[f"lr={value:g}"] = _counts(model, data, pop.params[k], config, f"sweep_lr{k}")
    return StageOutput(
        arrays=arrays, scalars={"values": values, "final_width": finals, "counts": counts}
    )


def sweep_step(out: str, config_json: str) -> StageOutput:
    """Tunnel width against R over training, and short directions, per hyperparameter.

    Every setting is a :class:`Part` (:func:`sweep_part`), fanned out on the run's executor.
    """
    config = RunConfig.model_validate_json(config_json)
    settings = _sweep_settings(config)
    parts = [
        Part(part_id, sweep_part, (out, config_json, part_id), weight=len(values))
        for part_id, (_, values) in settings.items()
    ]
    results = run_parts(out, "wedges/sweep/parts", parts, executor_for(config))
    arrays: dict[str, np.ndarray] = {}
    figures: dict[str, bytes] = {}
    finals: dict[str, list[float]] = {}
    curves_by_axis: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    lr_counts: dict[str, dict[str, float]] = {}
    for part_id, (axis, values) in settings.items():
        result = results[part_id]
        finals.setdefault(axis, []).extend(result.scalars["final_width"])
        lr_counts.update(result.scalars.get("counts") or {})
        curves = curves_by_axis.setdefault(axis, {})
        for value in values:
            curve = {
                key: result.arrays[f"{value:g}/{key}"]
                for key in _CURVE_KEYS
                if f"{value:g}/{key}" in result.arrays
            }
            if curve:
                curves[f"{axis}={value:g}"] = curve
                for key in ("weight_norm", "width_mean", "width_std"):
                    arrays[f"{axis}/{value:g}/{key}"] = curve[key]
    for axis, curves in curves_by_axis.items():
        if curves:
            figures[f"width_vs_norm_{axis}.png"] = figure_to_png(
                plot_width_vs_norm(curves, title=f"Tunnel width against weight norm: {axis}")
            )
    figures["short_dirs_vs_lr.png"] = figure_to_png(
        plot_counts(lr_counts, title="Eigenvalues above threshold against the learning rate")
    )
    claims = _sweep_claims(config, finals, lr_counts, curves_by_axis)
    return StageOutput(
        arrays=arrays,
        figures=figures,
        claims=claims,
        scalars={f"{axis}_final_width": values for axis, values in finals.items()},
    )


def _sweep_claims(
    config: RunConfig,
    finals: dict[str, list[float]],
    lr_counts: dict[str, dict[str, float]],
    curves: dict[str, dict[str, dict[str, np.ndarray]]],
) -> list[Claim]:
    sweep = config.wedges.sweep

    def width_claim(
        cid: str, axis: str, values: list[Any], sign: int, statement: str, paper: Any
    ) -> Claim:
        rho = _monotone(finals.get(axis, []), sign)
        return _claim(
            cid,
            statement,
            paper,
            {
                axis: values,
                "final_width": finals.get(axis, []),
                "spearman_in_expected_direction": rho,
            },
            rho > 0 if math.isfinite(rho) else None,
            config,
            f"holds if the final tunnel width has positive Spearman correlation with "
            f"the {axis} setting in the paper's direction "
            f"({'increasing' if sign > 0 else 'decreasing'})",
            figures=[f"width_vs_norm_{axis}.png"],
        )

    per_threshold = {
        t: [lr_counts[k][t] for k in lr_counts] for t in (next(iter(lr_counts.values()), {}) or {})
    }
    lr_rhos = {t: _monotone(v, -1) for t, v in per_threshold.items()}
    decided = [r for r in lr_rhos.values() if math.isfinite(r)]
    multipliers = sweep.width_multipliers
    scaled = {}
    for f in multipliers:
        curve = curves.get("width", {}).get(f"width={f:g}")
        if curve is not None:
            scaled[f"{f:g}"] = {
                "R_over_sqrt_f": (np.asarray(curve["weight_norm"]) / math.sqrt(f)).tolist(),
                "width": np.asarray(curve["width_mean"]).tolist(),
            }
    return [
        width_claim(
            "wedge.lr_width",
            "lr",
            sweep.lrs,
            +1,
            "A higher learning rate leads to wider tunnels.",
            {"4e-4": 5.1, "8e-4": 5.4, "16e-4": 5.8, "32e-4": 6.0},
        ),
        _claim(
            "wedge.lr_short_dirs",
            "A higher learning rate leads to fewer short directions.",
            {
                "4e-4": {"0.01": 6450, "0.02": 3000, "0.03": 2000},
                "8e-4": {"0.01": 4800, "0.02": 2030, "0.03": 1200},
                "16e-4": {"0.01": 2950, "0.02": 1080, "0.03": 510},
                "32e-4": {"0.01": 2100, "0.02": 660, "0.03": 280},
            },
            {"lr": sweep.lrs, "counts": lr_counts, "spearman_decreasing": lr_rhos},
            all(r > 0 for r in decided) if decided else None,
            config,
            "holds if at every threshold the count has negative Spearman correlation with "
            "the learning rate",
            figures=["short_dirs_vs_lr.png"],
        ),
        width_claim(
            "wedge.l2_width",
            "l2",
            sweep.l2s,
            +1,
            "More L2 regularisation leads to wider tunnels.",
            {"0": 6.0, "3e-5": 6.2, "1e-4": 6.5},
        ),
        width_claim(
            "wedge.dropout_width",
            "dropout",
            sweep.dropouts,
            +1,
            "Dropout (until too strong) leads to wider tunnels.",
            {"0%": 6.0, "5%": 6.3},
        ),
        width_claim(
            "wedge.batch_width",
            "batch",
            sweep.batch_sizes,
            -1,
            "A larger batch leads to narrower tunnels.",
            "stated, no plot",
        ),
        _claim(
            "wedge.width_scale",
            "For network width multiplier f, a curvature scale collapses when plotted "
            "against R / sqrt(f).",
            "plot of ξ against R/√f (ξ not defined in the paper)",
            {
                "width_multiplier": multipliers,
                "final_width": finals.get("width", []),
                "curves": scaled,
            },
            None,
            config,
            "undecided: the paper does not define ξ; we report tunnel width against "
            "R/sqrt(f) for each multiplier so the collapse can be judged from the figure",
            figures=["width_vs_norm_width.png"],
        ),
    ]


# --------------------------------------------------------------------------- A7 ensembles


def ensemble_step(out: str, config_json: str) -> StageOutput:
    config = RunConfig.model_validate_json(config_json)
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    result = run_ensembles(config.wedges.ensemble, model, dataset, seed=config.seed)
    return StageOutput(arrays=result.arrays, figures=result.figures, claims=result.claims)


# --------------------------------------------------------------------------- orchestration

WEDGE_STEPS: dict[str, tuple[str, Callable[[str, str], StageOutput]]] = {
    "toy": ("toy", toy_step),
    "radial_cuts": ("cuts", radial_cuts_step),
    "tunnel": ("tunnel", tunnel_step),
    "connectors": ("connect", connectors_step),
    "sweep": ("sweep", sweep_step),
    "ensemble": ("ensemble", ensemble_step),
}
"""step name -> (the WedgesConfig section that fingerprints it, the step function)."""


def step_fingerprint(config: RunConfig, step: str) -> dict[str, Any]:
    """What a wedge step's results depend on: its options, the base run and the curvature."""
    section, _ = WEDGE_STEPS[step]
    core = config.model_dump(mode="json", include={"seed", "dtype", "data", "model", "train"})
    fingerprint = {
        "options": getattr(config.wedges, section).model_dump(mode="json"),
        "base": core,
    }
    if section in {"tunnel", "connect", "cuts", "sweep"}:
        fingerprint["short_dirs"] = config.wedges.short_dirs.model_dump(mode="json")
    return fingerprint


def run_wedges(
    config: RunConfig,
    out: str | Path,
    on_step: Callable[[str, bool], None] | None = None,
    executor: Executor | None = None,
) -> list[str]:
    """Train the base population and run every wedge step; returns the steps that ran now.

    Completed steps are skipped, so an interrupted study resumes where it stopped. Training
    units run on ``executor`` (default: the one ``config.execution`` names); each step fans its
    own parts out on the executor its config names.
    """
    train_stage(config, out, executor=executor)
    ran = []
    config_json = config.model_dump_json()
    for name, (_, step) in WEDGE_STEPS.items():
        did = run_once(
            out, f"wedges/{name}", step_fingerprint(config, name), step, str(out), config_json
        )
        if on_step is not None:
            on_step(name, did)
        if did:
            ran.append(name)
    return ran
