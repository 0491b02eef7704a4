"""A3/A4: tunnels between two optima, and short directions along them (paper §4.2, Fig 1, 3, 4).

For each replicate the step joins the replicate's first two optima two ways (both with every
split point confined to the hyperplane normal to the segment):

* the paper's recipe: every split point optimised independently by projected gradient, until
  its train loss is within ``tunnel.tolerance`` of the endpoints' mean (``tunnel.epochs`` caps
  it); the gap reached is reported;
* a jointly optimised path: the same points moved together against the loss along the segments
  between them (``tunnel.joint``).

Both are evaluated densely (``path_resolution`` points per segment). Short directions are
counted exactly at the endpoints and at the split point at ``t = 1/2`` (one curvature job each).

Claims, each decided by a pure function below on one value per replicate:

=========================  ======================================================  =========
claim                      estimate (per replicate, then mean and 95% t-interval)   threshold
=========================  ======================================================  =========
wedge.linear_barrier       max loss on the line / endpoints' mean loss               > 2
wedge.tunnel_low_loss      tunnel barrier / line barrier (paper's recipe)             < 0.25
wedge.tunnel_two_blocks    equal-lag contrast of the deviation cosines                > 0
wedge.tunnel_label_changes  share of the endpoints' disagreement reached at t = 1/2    > 0.75
wedge.tunnel_short_dirs    log(count at the middle / endpoints' mean count)           > 0
=========================  ======================================================  =========
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lossatlas.analysis.statistics import (
    control,
    decide,
    equal_lag_contrast,
    log_ratio,
    null_control,
    permutation_null,
)
from lossatlas.claims import Claim, Decision
from lossatlas.evaluate import evaluate_points
from lossatlas.execute import executor_for
from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png
from lossatlas.plots.connectors import plot_deviation_cosines, plot_disagreement, plot_tunnel_path
from lossatlas.plots.wedges import plot_counts
from lossatlas.probes.paths import tunnel
from lossatlas.seeding import derive_seed
from lossatlas.stages.output import Part, StageOutput, run_parts
from lossatlas.stages.train import TRAIN_GROUP
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges._common import (
    as_tensor_like,
    claim_maker,
    replicate_members,
    spectrum_part,
    step_context,
)

__all__ = [
    "decide_label_changes",
    "decide_linear_barrier",
    "decide_short_dirs",
    "decide_tunnel_low_loss",
    "decide_two_blocks",
    "midpoint_share",
    "short_dir_log_ratio",
    "tunnel_part",
    "tunnel_step",
]

BARRIER_FACTOR = 2.0  # the line "crosses a high-loss wall": its peak is > 2x the endpoints'
TUNNEL_FRACTION = 0.25  # the tunnel is "low-loss": its barrier is < 1/4 of the line's
PLATEAU_SHARE = 0.75  # halfway between a linear change (1/2) and a change done by the middle (1)
MIN_DISAGREEMENT = 0.02  # endpoints that agree on more than 98% of labels leave nothing to track
COUNT_THRESHOLDS = ("0.03", "0.05", "0.1")  # the paper's Fig. 4 thresholds along the tunnel
_NULL_DRAWS = 200


# --------------------------------------------------------------------------- decisions


def decide_linear_barrier(ratios: list[float], control_ratios: list[float]) -> Decision:
    """``wedge.linear_barrier``: log(the line's peak loss / the endpoints' mean), above log 2.

    On the log scale, since the ratios are multiplicative and their spread grows with them.
    ``control_ratios``: the same ratio on a segment without a wall (an optimum and its own
    trajectory one epoch earlier).
    """
    threshold = math.log(BARRIER_FACTOR)
    return decide(
        [_log(r) for r in ratios],
        threshold,
        "above",
        "log(max train loss on the straight path / the endpoints' mean train loss)",
        control=control(
            "the same log ratio from an optimum to its own snapshot one epoch earlier",
            [_log(r) for r in control_ratios],
            threshold,
            "above",
        ),
    )


def _log(value: float) -> float:
    return math.log(value) if math.isfinite(value) and value > 0 else math.nan


def decide_tunnel_low_loss(barrier_ratios: list[float], converged: list[bool]) -> Decision:
    """``wedge.tunnel_low_loss``: the tunnel's barrier over the line's, below 1/4.

    Inconclusive when a replicate's split points did not reach their tolerance (rule 6): an
    unconverged tunnel says nothing about whether a converged one would be low.
    """
    decision = decide(
        barrier_ratios,
        TUNNEL_FRACTION,
        "below",
        "barrier of the tunnel (paper's recipe, densely sampled) / barrier of the straight path",
        control=control(
            "the same ratio for the unoptimised straight path",
            [1.0] * len(barrier_ratios),
            TUNNEL_FRACTION,
            "below",
        ),
    )
    if not all(converged):
        return Decision("inconclusive", decision.evidence)
    return decision


def decide_two_blocks(contrasts: list[float], null_draws: np.ndarray) -> Decision:
    """``wedge.tunnel_two_blocks``: the equal-lag contrast, above 0.

    ``null_draws`` ``(R, n)``: per replicate, the contrast with the split points in ``n``
    random orders (no block edge left): the permutation null.
    """
    return decide(
        contrasts,
        0.0,
        "above",
        "equal-lag contrast: cosine of deviation pairs within a half minus across the "
        "midpoint, at equal lag, averaged over lags",
        control=null_control(
            "the same contrast with the split points' order permuted", null_draws, 0.0, "above"
        ),
    )


def midpoint_share(
    dis_a: np.ndarray, dis_b: np.ndarray, path_t: np.ndarray, endpoints: float
) -> float:
    """How much of the endpoints' label disagreement is reached by the middle of the path.

    ``(d_a(1/2) + d_b(1/2)) / (2 d_end)``: ``d_a`` is the share of test labels that differ from
    endpoint a's, ``d_end`` the endpoints' disagreement. 1/2 when labels change linearly all the
    way, about 1 (or more) when they change by the middle and then stay. NaN without
    disagreement.
    """
    if endpoints <= 0:
        return math.nan
    mid = int(np.abs(np.asarray(path_t) - 0.5).argmin())
    return float((dis_a[mid] + dis_b[mid]) / (2.0 * endpoints))


def decide_label_changes(
    shares: list[float], endpoint_disagreement: list[float], null_shares: list[float]
) -> Decision:
    """``wedge.tunnel_label_changes``: the midpoint share, above 3/4.

    Inconclusive when the endpoints disagree on fewer than 2% of labels: there is nothing to
    change. ``null_shares``: the share on a path whose labels switch linearly from a's to b's.
    """
    decision = decide(
        shares,
        PLATEAU_SHARE,
        "above",
        "(disagreement with endpoint a + with endpoint b at t = 1/2) / (2 x the endpoints' "
        "disagreement), along the tunnel, on test labels",
        control=control(
            "the same share on a path whose labels switch linearly from a's to b's",
            null_shares,
            PLATEAU_SHARE,
            "above",
        ),
    )
    if min(endpoint_disagreement, default=0.0) < MIN_DISAGREEMENT:
        return Decision("inconclusive", decision.evidence)
    return decision


def short_dir_log_ratio(
    counts: dict[str, float], reference: dict[str, float], thresholds: tuple[str, ...]
) -> float:
    """Mean over ``thresholds`` of ``log(counts / reference)`` (NaN where a count is 0)."""
    values = [log_ratio(counts.get(t, math.nan), reference.get(t, math.nan)) for t in thresholds]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def decide_short_dirs(
    log_ratios: list[float], matched: list[bool], control_ratios: list[float]
) -> Decision:
    """``wedge.tunnel_short_dirs``: log(count at the middle / endpoints' mean), above 0.

    Inconclusive unless every replicate's middle is at matched loss with its endpoints (rule 4:
    counts grow with the loss level). ``control_ratios``: log(count at b / count at a), two
    optima, where no difference is expected.
    """
    decision = decide(
        log_ratios,
        0.0,
        "above",
        "mean over thresholds 0.03, 0.05, 0.1 of log(count at the tunnel's middle / the "
        "endpoints' mean count), exact counts",
        control=control(
            "the same log ratio between the two endpoints", control_ratios, 0.0, "above"
        ),
    )
    if not all(matched):
        return Decision("inconclusive", decision.evidence)
    return decision


# --------------------------------------------------------------------------- compute


def tunnel_part(out: str, config_json: str, replicate: int) -> StageOutput:
    """The tunnel of one replicate (both ways) and the controls that need the network.

    Arrays: the tunnel's (``Tunnel.to_arrays``) and ``control_line_loss`` (the segment from
    endpoint a to its snapshot one epoch earlier). Scalars: ``summary``, ``convergence``,
    ``contrast``, ``contrast_null``, ``share``, ``share_null``, ``control_ratio``.
    """
    config = RunConfig.model_validate_json(config_json)
    store, dataset, model, final = step_context(out, config)
    a_id, b_id = replicate_members(config, replicate)[:2]
    theta = as_tensor_like(final[[a_id, b_id]], dataset.x_train)
    # Each replicate draws its own data orders and segment samples.
    opts = config.wedges.tunnel.model_copy(
        update={"seed": derive_seed(config.seed, "tunnel", replicate)}
    )
    result = tunnel(model, dataset, theta[0], theta[1], options=opts)
    summary = result.summary("train")
    arrays = result.to_arrays()

    first_block = math.ceil(opts.points / 2)
    cosines = result.cosines.cpu().numpy()
    contrast = equal_lag_contrast(cosines, first_block)

    def shuffled(rng: np.random.Generator) -> float:
        order = rng.permutation(cosines.shape[0])
        return equal_lag_contrast(cosines[np.ix_(order, order)], first_block)

    null = permutation_null(
        shuffled, seed=derive_seed(config.seed, "tunnel", "null", replicate), draws=_NULL_DRAWS
    )
    arrays["contrast_null"] = null
    path_t = result.path_t.cpu().numpy()
    dis_a = result.disagreement_a_tunnel.cpu().numpy()
    dis_b = result.disagreement_b_tunnel.cpu().numpy()
    share = midpoint_share(dis_a, dis_b, path_t, result.disagreement_endpoints)
    # Labels that switch linearly from a's to b's: at position t a share t of the disputed
    # labels has switched, so d_a(t) = t d_end and d_b(t) = (1 - t) d_end.
    share_null = midpoint_share(
        path_t * result.disagreement_endpoints,
        (1 - path_t) * result.disagreement_endpoints,
        path_t,
        result.disagreement_endpoints,
    )

    control_loss = _line_to_previous_snapshot(store, model, dataset, a_id, opts.path_resolution)
    arrays["control_line_loss"] = control_loss
    control_ratio = float(control_loss.max() / (0.5 * (control_loss[0] + control_loss[-1])))
    return StageOutput(
        arrays=arrays,
        scalars={
            "summary": summary,
            "convergence": result.convergence.summary(),
            "joint_stopped_at": result.joint_stopped_at,
            "contrast": contrast,
            "contrast_null_95": [float(np.quantile(null, 0.025)), float(np.quantile(null, 0.975))],
            "share": share,
            "share_null": share_null,
            "disagreement_endpoints": result.disagreement_endpoints,
            "control_ratio": control_ratio,
            "middle_index": result.middle_index,
        },
    )


def _line_to_previous_snapshot(
    store: Any, model: torch.nn.Module, dataset: Any, member: int, resolution: int
) -> np.ndarray:
    """Train loss along the segment from a member's final point to its snapshot one epoch
    earlier (same basin, no wall): the linear barrier's control. ``(resolution + 1,)``."""
    x, y = dataset.split("train")
    if (
        not store.has(f"{TRAIN_GROUP}/snapshots")
        or store.array(f"{TRAIN_GROUP}/snapshots").shape[1] < 2
    ):
        return np.full(resolution + 1, np.nan)  # no trajectory stored: no control
    snapshots = store.array(f"{TRAIN_GROUP}/snapshots")
    end = torch.as_tensor(np.asarray(snapshots[member, -1])).to(x)
    before = torch.as_tensor(np.asarray(snapshots[member, -2])).to(x)
    t = torch.linspace(0.0, 1.0, resolution + 1, dtype=x.dtype).unsqueeze(1)
    loss, _ = evaluate_points(ParamSpace(model), (1 - t) * end + t * before, x, y)
    return loss.cpu().numpy().astype(np.float64)


def tunnel_step(out: str, config_json: str) -> StageOutput:
    """Tunnels in every replicate, their short directions, and the five claims."""
    config = RunConfig.model_validate_json(config_json)
    replicates = range(config.wedges.replicates)
    executor = executor_for(config)
    parts = [Part(f"r{r}", tunnel_part, (out, config_json, r)) for r in replicates]
    done = run_parts(out, "wedges/tunnel/parts", parts, executor)
    final = AtlasStore.open(out, create=False).read(f"{TRAIN_GROUP}/params")
    spectra = []
    for r in replicates:
        a_id, b_id = replicate_members(config, r)[:2]
        middle = done[f"r{r}"].arrays["points"][int(done[f"r{r}"].scalars["middle_index"])]
        for name, point in (("a", final[a_id]), ("b", final[b_id]), ("middle", middle)):
            unit = f"tunnel_r{r}_{name}"
            spectra.append(Part(unit, spectrum_part, (out, config_json, point, unit)))
    counted = run_parts(out, "wedges/tunnel/spectra", spectra, executor)
    return _gather(config, [done[f"r{r}"] for r in replicates], counted)


def _gather(
    config: RunConfig, tunnels: list[StageOutput], counted: dict[str, StageOutput]
) -> StageOutput:
    match = config.wedges.match_tolerance
    ratios, low_loss, converged, contrasts, nulls, shares, share_nulls = [], [], [], [], [], [], []
    endpoint_dis, control_ratios, log_ratios, matched, count_controls = [], [], [], [], []
    counts_by_replicate: dict[str, dict[str, dict[str, float]]] = {}
    for r, result in enumerate(tunnels):
        s = result.scalars["summary"]
        ratios.append(s["loss_line_max"] / s["loss_endpoints"])
        low_loss.append(s["barrier_tunnel"] / s["barrier_line"])
        converged.append(bool(result.scalars["convergence"]["converged"]))
        contrasts.append(result.scalars["contrast"])
        nulls.append(result.arrays["contrast_null"])
        shares.append(result.scalars["share"])
        share_nulls.append(result.scalars["share_null"])
        endpoint_dis.append(result.scalars["disagreement_endpoints"])
        control_ratios.append(result.scalars["control_ratio"])
        a, b, mid = (counted[f"tunnel_r{r}_{n}"].scalars for n in ("a", "b", "middle"))
        ends = {t: 0.5 * (a["counts"][t] + b["counts"][t]) for t in a["counts"]}
        log_ratios.append(short_dir_log_ratio(mid["counts"], ends, COUNT_THRESHOLDS))
        count_controls.append(short_dir_log_ratio(b["counts"], a["counts"], COUNT_THRESHOLDS))
        end_loss = 0.5 * (a["loss"] + b["loss"])
        matched.append(abs(mid["loss"] / end_loss - 1.0) <= match)
        counts_by_replicate[f"r{r}"] = {
            "endpoint a": a["counts"],
            "endpoint b": b["counts"],
            "middle": mid["counts"],
        }

    first = tunnels[0]
    figures = _figures(config, first, counts_by_replicate["r0"])
    claims = _claims(
        config,
        {
            "linear": decide_linear_barrier(ratios, control_ratios),
            "low_loss": decide_tunnel_low_loss(low_loss, converged),
            "blocks": decide_two_blocks(contrasts, np.stack(nulls)),
            "labels": decide_label_changes(shares, endpoint_dis, share_nulls),
            "short_dirs": decide_short_dirs(log_ratios, matched, count_controls),
        },
        tunnels,
        counted,
        counts_by_replicate,
        matched,
    )
    arrays = {f"r0/{k}": v for k, v in first.arrays.items()}
    return StageOutput(
        arrays=arrays,
        figures=figures,
        claims=claims,
        scalars={
            "line_ratio": ratios,
            "tunnel_ratio": low_loss,
            "converged": converged,
            "contrast": contrasts,
            "midpoint_share": shares,
            "short_dir_log_ratio": log_ratios,
            "matched_loss": matched,
        },
    )


def _figures(
    config: RunConfig, first: StageOutput, counts: dict[str, dict[str, float]]
) -> dict[str, bytes]:
    a = first.arrays
    joint = a.get("loss_joint_train")
    return {
        "tunnel_path.png": figure_to_png(
            plot_tunnel_path(
                a["path_t"],
                a["loss_line_train"],
                a["loss_tunnel_train"],
                acc_line=a["acc_line_train"],
                acc_tunnel=a["acc_tunnel_train"],
                node_t=np.concatenate([[0.0], a["t_points"], [1.0]]),
                loss_joint=joint,
                title="Straight path, tunnel and joint path (replicate 0)",
            )
        ),
        "tunnel_cosines.png": figure_to_png(plot_deviation_cosines(a["cosines"])),
        "tunnel_disagreement.png": figure_to_png(
            plot_disagreement(
                a["path_t"],
                a["disagreement_a_line"],
                a["disagreement_b_line"],
                a["disagreement_a_tunnel"],
                a["disagreement_b_tunnel"],
                node_t=np.concatenate([[0.0], a["t_points"], [1.0]]),
            )
        ),
        "tunnel_short_dirs.png": figure_to_png(
            plot_counts(counts, title="Eigenvalues above threshold along the tunnel (replicate 0)")
        ),
    }


def _claims(
    config: RunConfig,
    decisions: dict[str, Decision],
    tunnels: list[StageOutput],
    counted: dict[str, StageOutput],
    counts: dict[str, dict[str, dict[str, float]]],
    matched: list[bool],
) -> list[Claim]:
    claim = claim_maker(config)
    opts = config.wedges.tunnel
    per = [t.scalars for t in tunnels]
    tolerance = f"{opts.tolerance:g}" if opts.tolerance is not None else "none"
    return [
        claim(
            "wedge.linear_barrier",
            "The straight line between two independent optima crosses a high-loss wall.",
            "qualitative (Fig 1): a high barrier on the linear path",
            {
                "loss_endpoints": [p["summary"]["loss_endpoints"] for p in per],
                "loss_line_max": [p["summary"]["loss_line_max"] for p in per],
            },
            decisions["linear"],
            f"holds if the 95% interval over replicates of log(max train loss on the straight "
            f"path / the endpoints' mean) lies above log {BARRIER_FACTOR:g}",
            figures=["tunnel_path.png"],
        ),
        claim(
            "wedge.tunnel_low_loss",
            "Optimising the split points in the hyperplanes normal to the segment gives a "
            "low-loss tunnel between the optima.",
            "qualitative (Fig 3): the tunnel stays near the endpoints' loss",
            {
                "barrier_line": [p["summary"]["barrier_line"] for p in per],
                "barrier_tunnel": [p["summary"]["barrier_tunnel"] for p in per],
                "barrier_joint": [p["summary"]["barrier_joint"] for p in per],
                "convergence": [p["convergence"] for p in per],
                "joint_stopped_at": [p["joint_stopped_at"] for p in per],
            },
            decisions["low_loss"],
            f"holds if the 95% interval over replicates of (tunnel barrier / straight-path "
            f"barrier) lies below {TUNNEL_FRACTION:g}, the tunnel built by the paper's "
            f"recipe (split points optimised independently until their train loss is within "
            f"{tolerance} of the endpoints' mean, at most {opts.epochs} epochs) and sampled "
            f"{opts.path_resolution} points per segment; inconclusive if any replicate's points "
            "did not converge. The jointly optimised path is reported beside it (barrier_joint)",
            figures=["tunnel_path.png"],
        ),
        claim(
            "wedge.tunnel_two_blocks",
            "The deviation vectors of the split points form two blocks: similar within the "
            "first and second half, nearly orthogonal across.",
            {"within_block_cos": "≈ 0.6-1", "across_block_cos": "≈ 0"},
            {
                "equal_lag_contrast": [p["contrast"] for p in per],
                "permutation_null_95": [p["contrast_null_95"] for p in per],
            },
            decisions["blocks"],
            "holds if the 95% interval over replicates of the equal-lag contrast (mean cosine "
            "within a half minus across the midpoint, pairs at the same lag, averaged over "
            f"lags; halves: the first ceil(k/2) = {math.ceil(opts.points / 2)} split points and "
            "the rest) lies above 0; a cosine that merely decays with distance scores 0",
            figures=["tunnel_cosines.png"],
        ),
        claim(
            "wedge.tunnel_label_changes",
            "Independent optima disagree on many test labels; along the path the labels "
            "change roughly linearly up to the middle, then stay.",
            {"endpoint_disagreement": "≈ 0.25", "peak_on_path": "≈ 0.40"},
            {
                "endpoint_disagreement": [p["disagreement_endpoints"] for p in per],
                "midpoint_share": [p["share"] for p in per],
                "linear_switch_share": [p["share_null"] for p in per],
            },
            decisions["labels"],
            "holds if the 95% interval over replicates of the midpoint share ((disagreement "
            "with a + with b at t = 1/2) / (2 x the endpoints' disagreement), test labels, "
            f"along the tunnel) lies above {PLATEAU_SHARE:g} (linear change all the way gives "
            f"0.5); inconclusive if the endpoints disagree on fewer than {MIN_DISAGREEMENT:.0%} "
            "of labels",
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
            {
                "counts": counts,
                "loss_at_counts": {
                    f"r{r}": {
                        n: counted[f"tunnel_r{r}_{n}"].scalars["loss"] for n in ("a", "b", "middle")
                    }
                    for r in range(len(tunnels))
                },
                "matched_loss": matched,
                "method": sorted({c.scalars["method"] for c in counted.values()}),
            },
            decisions["short_dirs"],
            "holds if the 95% interval over replicates of the mean over thresholds 0.03, 0.05 "
            "and 0.1 of log(count at the split point t = 1/2 / the endpoints' mean count) lies "
            "above 0; inconclusive unless every middle's train loss (on the Hessian's samples) "
            f"is within {config.wedges.match_tolerance:.0%} of its endpoints' mean (rule 4)",
            notes=f"exact counts from the dense Hessian on {config.wedges.short_dirs.eval_samples} "
            "train samples where D allows (method lists what was used)",
            figures=["tunnel_short_dirs.png"],
        ),
    ]
