"""A5: m-connectors, low loss connecting m+1 optima, and short directions at their middle.

Claims ``wedge.connector_low_loss`` and ``wedge.connector_short_dirs`` (paper §4.3, Fig 4).
For every replicate and ``m = 1 .. max_m`` one :class:`~lossatlas.stages.output.Part` connects the
replicate's first ``m + 1`` networks (by default every face barycentre is optimised: the
subdivision shape, each point trained until it is within ``tolerance`` of the optima's loss),
then one curvature job counts the exact spectrum at the connector's optimised centre.

=========================  ========================================================  =========
claim                      estimate (per replicate, then mean and 95% t-interval)     threshold
=========================  ========================================================  =========
wedge.connector_low_loss   worst m of (mean loss over Dirichlet samples / optima's)    < 2
wedge.connector_short_dirs  slope of log(count above 0.03 at the centre) against m     > 0
=========================  ========================================================  =========
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from lossatlas.analysis.statistics import control, decide, permutation_control, rank_slope
from lossatlas.claims import Claim, Control, Decision
from lossatlas.evaluate import evaluate_points
from lossatlas.execute import executor_for
from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png
from lossatlas.plots.connectors import plot_loss_vs_optima
from lossatlas.plots.wedges import plot_counts
from lossatlas.probes.paths import m_connector
from lossatlas.seeding import derive_seed
from lossatlas.stages.output import Part, StageOutput, run_parts
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges._common import (
    as_tensor_like,
    claim_maker,
    replicate_members,
    spectrum_part,
    step_context,
    train_subset,
)

__all__ = [
    "connector_part",
    "connectors_step",
    "decide_connector_low_loss",
    "decide_connector_short_dirs",
]

LOSS_FACTOR = 2.0  # "low loss": samples on the connector average at most twice the optima's
COUNT_THRESHOLD = "0.03"  # the paper's Fig. 4 threshold for connectors


def decide_connector_low_loss(
    ratios: list[float], hull_ratios: list[float], converged: list[bool]
) -> Decision:
    """``wedge.connector_low_loss``: the worst m's sample-to-optima loss ratio, below 2.

    ``hull_ratios``: the same ratio for the same Dirichlet weights on the unoptimised simplex
    (the optima's convex hull). Inconclusive if any connector's points did not converge.
    """
    decision = decide(
        ratios,
        LOSS_FACTOR,
        "below",
        "max over m of (mean train loss over Dirichlet samples on the connector / the optima's "
        "mean train loss)",
        control=control(
            "the same ratio on the unoptimised simplex (the optima's convex hull)",
            hull_ratios,
            LOSS_FACTOR,
            "below",
        ),
    )
    if not all(converged):
        return Decision("inconclusive", decision.evidence)
    return decision


def decide_connector_short_dirs(
    slopes: list[float], matched: list[bool], permuted: Control
) -> Decision:
    """``wedge.connector_short_dirs``: the slope of log(count) against m, above 0.

    Inconclusive unless every centre is at matched loss with its optima (rule 4).
    ``permuted``: the same test with the m labels permuted.
    """
    decision = decide(
        slopes,
        0.0,
        "above",
        f"least-squares slope of log(count of eigenvalues above {COUNT_THRESHOLD} at the "
        "connector's optimised centre) against m, exact counts",
        control=permuted,
    )
    if not all(matched):
        return Decision("inconclusive", decision.evidence)
    return decision


def connector_part(out: str, config_json: str, replicate: int, m: int) -> StageOutput:
    """The m-connector over replicate ``replicate``'s first ``m + 1`` networks.

    Arrays ``loss_samples_train``, ``loss_hull_train``, ``middle`` (D,). Scalars ``summary``,
    ``convergence`` and ``optima_loss`` (the optima's mean loss on the Hessian's samples).
    """
    config = RunConfig.model_validate_json(config_json)
    _, dataset, model, final = step_context(out, config)
    members = list(replicate_members(config, replicate)[: m + 1])
    points = as_tensor_like(final[members], dataset.x_train)
    opts = config.wedges.connect.options.model_copy(
        update={"seed": derive_seed(config.seed, "connector", replicate, m)}
    )
    conn = m_connector(model, dataset, points, options=opts)
    data = train_subset(dataset, config.wedges.short_dirs.eval_samples)
    optima_loss, _ = evaluate_points(ParamSpace(model), points, *data)
    return StageOutput(
        arrays={
            "loss_samples_train": conn.loss_samples["train"].cpu().numpy(),
            "loss_hull_train": conn.loss_hull["train"].cpu().numpy(),
            "middle": conn.middle.detach().cpu().numpy(),
        },
        scalars={
            "summary": conn.summary("train"),
            "convergence": conn.convergence.summary(),
            "optima_loss": float(optima_loss.mean()),
        },
    )


def connectors_step(out: str, config_json: str) -> StageOutput:
    """m-connectors in every replicate for m = 1 .. max_m, and their centres' spectra."""
    config = RunConfig.model_validate_json(config_json)
    ms = list(range(1, config.wedges.connect.max_m + 1))
    replicates = range(config.wedges.replicates)
    executor = executor_for(config)
    keys = list(itertools.product(replicates, ms))
    parts = [
        Part(f"r{r}-m{m}", connector_part, (out, config_json, r, m), weight=m + 1) for r, m in keys
    ]
    results = run_parts(out, "wedges/connectors/parts", parts, executor)
    spectra = [
        Part(
            f"r{r}-m{m}",
            spectrum_part,
            (out, config_json, results[f"r{r}-m{m}"].arrays["middle"], f"connector_r{r}_m{m}"),
        )
        for r, m in keys
    ]
    counted = run_parts(out, "wedges/connectors/spectra", spectra, executor)

    ratios, hull_ratios, slopes, at_m = [], [], [], []
    converged: list[bool] = []
    matched: list[bool] = []
    counts: dict[str, dict[str, dict[str, float]]] = {}
    match = config.wedges.match_tolerance
    for r in replicates:
        rows = [results[f"r{r}-m{m}"].scalars for m in ms]
        spec = [counted[f"r{r}-m{m}"].scalars for m in ms]
        ratios.append(
            max(s["summary"]["loss_samples_mean"] / s["summary"]["loss_optima_mean"] for s in rows)
        )
        hull_ratios.append(
            max(s["summary"]["loss_hull_mean"] / s["summary"]["loss_optima_mean"] for s in rows)
        )
        converged.extend(bool(s["convergence"]["converged"]) for s in rows)
        at = [c["counts"].get(COUNT_THRESHOLD, math.nan) for c in spec]
        slopes.append(rank_slope(at, log=True))
        at_m.append(at)
        matched.extend(
            abs(c["loss"] / s["optima_loss"] - 1.0) <= match
            for c, s in zip(spec, rows, strict=True)
        )
        counts[f"r{r}"] = {f"m={m}": c["counts"] for m, c in zip(ms, spec, strict=True)}

    first = [results[f"r0-m{m}"].scalars["summary"] for m in ms]
    figures = {
        "connector_loss.png": figure_to_png(
            plot_loss_vs_optima(
                ms,
                {
                    "connector samples": [s["loss_samples_mean"] for s in first],
                    "optima": [s["loss_optima_mean"] for s in first],
                    "straight hull": [s["loss_hull_mean"] for s in first],
                },
            )
        ),
        "connector_short_dirs.png": figure_to_png(
            plot_counts(
                counts["r0"],
                title="Eigenvalues above threshold at the connector's centre (replicate 0)",
            )
        ),
    }
    claims = _claims(
        config,
        decide_connector_low_loss(ratios, hull_ratios, converged),
        decide_connector_short_dirs(
            slopes,
            matched,
            permutation_control(
                "the same slope with the m labels permuted",
                at_m,
                lambda counts: rank_slope(counts, log=True),
                0.0,
                "above",
                seed=derive_seed(config.seed, "connector", "null"),
            ),
        ),
        ms,
        results,
        counted,
        counts,
    )
    arrays = {
        f"r0/m{m}/loss_samples_train": results[f"r0-m{m}"].arrays["loss_samples_train"] for m in ms
    }
    arrays["m"] = np.asarray(ms)
    return StageOutput(
        arrays=arrays,
        figures=figures,
        claims=claims,
        scalars={"loss_ratio": ratios, "count_slope": slopes, "converged": converged},
    )


def _claims(
    config: RunConfig,
    low_loss: Decision,
    short_dirs: Decision,
    ms: list[int],
    results: dict[str, StageOutput],
    counted: dict[str, StageOutput],
    counts: dict[str, dict[str, dict[str, float]]],
) -> list[Claim]:
    claim = claim_maker(config)
    opts = config.wedges.connect.options
    replicates = range(config.wedges.replicates)
    table = {
        f"r{r}": {
            f"m={m}": {
                **results[f"r{r}-m{m}"].scalars["summary"],
                "convergence": results[f"r{r}-m{m}"].scalars["convergence"],
            }
            for m in ms
        }
        for r in replicates
    }
    tolerance = f"{opts.tolerance:g}" if opts.tolerance is not None else "none"
    return [
        claim(
            "wedge.connector_low_loss",
            "Points optimised in the complement of the optima's affine span join m+1 optima "
            "with a low-loss connector.",
            "verified up to m = 10 optima (§4.3)",
            {"m": ms, "per_replicate": table},
            low_loss,
            "holds if the 95% interval over replicates of the worst m's (mean train loss over "
            f"{opts.dirichlet_samples} Dirichlet samples on the connector / the optima's mean) "
            f"lies below {LOSS_FACTOR:g}; inconclusive if any connector's points did not reach "
            f"their tolerance ({tolerance} of the optima's loss, at most {opts.epochs} epochs)",
            figures=["connector_loss.png"],
            notes=f"connector shape: {opts.shape}",
        ),
        claim(
            "wedge.connector_short_dirs",
            "Short directions at the connector's middle grow with the number of optima.",
            {"1": 240, "2": 570, "3": 980, "4": 1155, "5": 1065},
            {
                "m": ms,
                "counts": counts,
                "loss_at_centre": {
                    f"r{r}": [counted[f"r{r}-m{m}"].scalars["loss"] for m in ms] for r in replicates
                },
                "optima_loss": {
                    f"r{r}": [results[f"r{r}-m{m}"].scalars["optima_loss"] for m in ms]
                    for r in replicates
                },
                "method": sorted({c.scalars["method"] for c in counted.values()}),
            },
            short_dirs,
            "holds if the 95% interval over replicates of the least-squares slope of "
            f"log(count above {COUNT_THRESHOLD} at the connector's optimised centre) against m "
            f"(m = 1..{ms[-1]}) lies above 0; inconclusive unless every centre's train loss is "
            f"within {config.wedges.match_tolerance:.0%} of its optima's mean (rule 4)",
            figures=["connector_short_dirs.png"],
        ),
    ]
