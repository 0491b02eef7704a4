"""A6: tunnel width and short directions under the learning rate, L2, dropout, batch, width.

Claims ``wedge.lr_width``, ``wedge.lr_short_dirs``, ``wedge.l2_width``,
``wedge.dropout_width``, ``wedge.batch_width`` and ``wedge.width_scale`` (paper §4.4, Fig 4-5).
Every setting is a :class:`~lossatlas.stages.output.Part` on the run's executor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lossatlas.claims import Claim
from lossatlas.context import run_dataset
from lossatlas.execute import executor_for
from lossatlas.models import build_model
from lossatlas.plots import figure_to_png
from lossatlas.plots.wedges import plot_counts
from lossatlas.plots.width import plot_width_vs_norm
from lossatlas.populations.train import train_population
from lossatlas.probes.width import width_over_snapshots
from lossatlas.stages.output import Part, StageOutput, run_parts
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges._common import (
    claim_maker,
    monotone,
    short_dir_counts,
    train_subset,
)

__all__ = ["sweep_part", "sweep_step"]


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
    data = train_subset(dataset, sweep.eval_samples)
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
            counts[f"lr={value:g}"] = short_dir_counts(
                model, data, pop.params[k], config, f"sweep_lr{k}"
            )
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
    claim = claim_maker(config)

    def width_claim(
        cid: str, axis: str, values: list[Any], sign: int, statement: str, paper: Any
    ) -> Claim:
        rho = monotone(finals.get(axis, []), sign)
        return claim(
            cid,
            statement,
            paper,
            {
                axis: values,
                "final_width": finals.get(axis, []),
                "spearman_in_expected_direction": rho,
            },
            rho > 0 if math.isfinite(rho) else None,
            f"holds if the final tunnel width has positive Spearman correlation with "
            f"the {axis} setting in the paper's direction "
            f"({'increasing' if sign > 0 else 'decreasing'})",
            figures=[f"width_vs_norm_{axis}.png"],
        )

    per_threshold = {
        t: [lr_counts[k][t] for k in lr_counts] for t in (next(iter(lr_counts.values()), {}) or {})
    }
    lr_rhos = {t: monotone(v, -1) for t, v in per_threshold.items()}
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
        claim(
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
        claim(
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
            "undecided: the paper does not define ξ; we report tunnel width against "
            "R/sqrt(f) for each multiplier so the collapse can be judged from the figure",
            figures=["width_vs_norm_width.png"],
        ),
    ]
