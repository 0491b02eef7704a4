"""A5: m-connectors, low loss connecting m+1 optima, and short directions at their middle.

Claims ``wedge.connector_low_loss`` and ``wedge.connector_short_dirs`` (paper §4.3, Fig 4).
One :class:`~lossatlas.stages.output.Part` per m, on the run's executor.
"""

from __future__ import annotations

import numpy as np

from lossatlas.execute import executor_for
from lossatlas.plots import figure_to_png
from lossatlas.plots.connectors import plot_loss_vs_optima
from lossatlas.plots.wedges import plot_counts
from lossatlas.probes.paths import m_connector
from lossatlas.stages.output import Part, StageOutput, run_parts
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges._common import (
    as_tensor_like,
    claim_maker,
    monotone,
    short_dir_counts,
    step_context,
    train_subset,
)

__all__ = ["connector_part", "connectors_step"]


def connector_part(out: str, config_json: str, m: int) -> StageOutput:
    """One m-connector over the first m+1 optima, and the short directions at its middle."""
    config = RunConfig.model_validate_json(config_json)
    _, dataset, model, final = step_context(out, config)
    points = as_tensor_like(final[: m + 1], dataset.x_train)
    conn = m_connector(model, dataset, points, options=config.wedges.connect.options)
    data = train_subset(dataset, config.wedges.short_dirs.eval_samples)
    return StageOutput(
        arrays={"loss_samples_train": conn.loss_samples["train"].cpu().numpy()},
        scalars={
            "summary": conn.summary("train"),
            "counts": short_dir_counts(model, data, conn.middle, config, f"connector{m}"),
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
    claim = claim_maker(config)
    claims = [
        claim(
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
            "holds if, for every m, the mean train loss over Dirichlet samples on the "
            "connector is at most twice the optima's mean",
            figures=["connector_loss.png"],
            notes=f"connector shape: {opts.options.shape}",
        ),
        claim(
            "wedge.connector_short_dirs",
            "Short directions at the connector's middle grow with the number of optima.",
            {"1": 240, "2": 570, "3": 980, "4": 1155, "5": 1065},
            {"m": ms, "count_above_0.03": at_003, "counts": counts},
            monotone(at_003, +1) > 0 if len(ms) > 1 else None,
            "holds if the count above 0.03 has positive Spearman correlation with m "
            "(undecided with a single m)",
            figures=["connector_short_dirs.png"],
        ),
    ]
    arrays.update({"m": np.asarray(ms), "loss_samples_mean": np.asarray(samples)})
    return StageOutput(arrays=arrays, figures=figures, claims=claims)
