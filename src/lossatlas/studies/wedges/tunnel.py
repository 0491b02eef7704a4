"""A3/A4: the projected-gradient tunnel between two optima, and short directions along it.

Claims ``wedge.linear_barrier``, ``wedge.tunnel_low_loss``, ``wedge.tunnel_two_blocks``,
``wedge.tunnel_label_changes`` and ``wedge.tunnel_short_dirs`` (paper §4.2, Fig 1, 3, 4).
"""

from __future__ import annotations

import numpy as np

from lossatlas.execute import executor_for
from lossatlas.plots import figure_to_png
from lossatlas.plots.connectors import plot_deviation_cosines, plot_disagreement, plot_tunnel_path
from lossatlas.plots.wedges import plot_counts
from lossatlas.probes.paths import tunnel
from lossatlas.stages.output import Part, StageOutput, run_parts
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges._common import (
    as_tensor_like,
    claim_maker,
    short_dirs_part,
    step_context,
)

__all__ = ["tunnel_step"]


def tunnel_step(out: str, config_json: str) -> StageOutput:
    """Projected-gradient tunnel between two optima, with short directions along it."""
    config = RunConfig.model_validate_json(config_json)
    _, dataset, model, final = step_context(out, config)
    theta = as_tensor_like(final[:2], dataset.x_train)
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
    claim = claim_maker(config)
    claims = [
        claim(
            "wedge.linear_barrier",
            "The straight line between two independent optima crosses a high-loss wall.",
            "qualitative (Fig 1): a high barrier on the linear path",
            {
                "loss_endpoints": ends,
                "loss_line_max": summary["loss_line_max"],
                "barrier_line": summary["barrier_line"],
            },
            summary["loss_line_max"] > 2 * ends,
            "holds if the maximum train loss on the straight path exceeds twice the mean "
            "endpoint loss",
            figures=["tunnel_path.png"],
        ),
        claim(
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
            "holds if the tunnel's barrier (max loss minus the endpoints' mean) is below a "
            "quarter of the straight path's barrier",
            figures=["tunnel_path.png"],
        ),
        claim(
            "wedge.tunnel_two_blocks",
            "The deviation vectors of the split points form two blocks: similar within the "
            "first and second half, nearly orthogonal across.",
            {"within_block_cos": "≈ 0.6-1", "across_block_cos": "≈ 0"},
            {**blocks, "cosines": result.cosines},
            within >= 0.5 and blocks["across"] <= 0.3,
            "holds if the mean within-block cosine is >= 0.5 and the across-block mean is <= 0.3",
            figures=["tunnel_cosines.png"],
        ),
        claim(
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
            "holds if the endpoints disagree on 10-50% of test labels and, along the tunnel, "
            "the disagreement with endpoint a at the middle is >= 70% of its final value",
            figures=["tunnel_disagreement.png"],
        ),
        claim(
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
