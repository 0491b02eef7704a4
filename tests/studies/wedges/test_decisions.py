"""Every wedge claim's decision function on a negative control (data without the effect: it must
not hold) and a positive control (data with it: it must hold), built from synthetic arrays and
landscapes of known geometry (CLAIMS.md rule 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossatlas.analysis.statistics import control, equal_lag_contrast, permutation_control
from lossatlas.studies.wedges.connectors import (
    decide_connector_low_loss,
    decide_connector_short_dirs,
)
from lossatlas.studies.wedges.cuts import decide_radial_cuts, elongation, round_basins
from lossatlas.studies.wedges.ensemble import (
    baseline_parts,
    decide_ensemble_baselines,
    decide_ensemble_vs_swa,
    stable_lr_max,
    vs_swa_parts,
)
from lossatlas.studies.wedges.sweep import (
    collapse_log_ratio,
    decide_collapse,
    decide_trend,
    trend_at_common_norm,
    trend_resolution,
)
from lossatlas.studies.wedges.tunnel import (
    decide_label_changes,
    decide_linear_barrier,
    decide_short_dirs,
    decide_tunnel_low_loss,
    decide_two_blocks,
    midpoint_share,
    short_dir_log_ratio,
)

RNG = np.random.default_rng(0)


def _null(values: list[float]):  # type: ignore[no-untyped-def]
    return control("null", values, 0.0, "above")


# --------------------------------------------------------------------------- A2 radial cuts


def _grid(n: int = 61) -> tuple[np.ndarray, np.ndarray]:
    return np.linspace(-1.0, 6.0, n), np.linspace(-1.0, 6.0, n)


def _radial_tunnels(coords: tuple[np.ndarray, np.ndarray], optima: np.ndarray) -> np.ndarray:
    """Loss low along the ray through each optimum (distance across the ray, plus a little
    along it): radial tunnels from the origin."""
    gx, gy = np.meshgrid(*coords, indexing="ij")
    p = np.stack([gx, gy], -1)
    losses = []
    for o in optima:
        ray = o / np.linalg.norm(o)
        along = p @ ray
        across = p - along[..., None] * ray
        losses.append((across**2).sum(-1) + 0.01 * (along - np.linalg.norm(o)) ** 2)
    return np.min(losses, axis=0)


@pytest.mark.parametrize("angle", [0.3, 0.5, 0.7])
def test_elongation_sees_radial_tunnels_and_not_round_basins(angle: float) -> None:
    coords = _grid()
    optima = np.array([[4.0, 4.0 * angle], [4.0 * angle, 4.0]])
    tunnels = _radial_tunnels(coords, optima)
    assert elongation(tunnels, coords, optima[0], 0.05)[0] > 1.0
    bowls = round_basins(coords, optima)
    assert abs(elongation(bowls, coords, optima[0], 0.5)[0]) < 0.1


def test_radial_cuts_decision_controls() -> None:
    coords = _grid()
    radial, round_ = [], []
    for angle in (0.3, 0.5, 0.7):
        optima = np.array([[4.0, 4.0 * angle], [4.0 * angle, 4.0]])
        radial.append(
            np.mean(
                [elongation(_radial_tunnels(coords, optima), coords, o, 0.05)[0] for o in optima]
            )
        )
        bowls = round_basins(coords, optima)
        round_.append(np.mean([elongation(bowls, coords, o, 0.5)[0] for o in optima]))
    assert decide_radial_cuts(radial, round_).verdict == "holds"
    assert decide_radial_cuts(round_, round_).verdict != "holds"


# --------------------------------------------------------------------------- A3/A4 tunnel


def test_linear_barrier_controls() -> None:
    same_basin = [1.1, 1.05, 1.2]
    assert decide_linear_barrier([6.0, 9.0, 12.0], same_basin).verdict == "holds"
    assert decide_linear_barrier(same_basin, same_basin).verdict == "fails"


def test_tunnel_low_loss_controls_and_convergence() -> None:
    assert decide_tunnel_low_loss([0.05, 0.1, 0.08], [True] * 3).verdict == "holds"
    assert decide_tunnel_low_loss([0.9, 1.0, 0.8], [True] * 3).verdict == "fails"
    unconverged = decide_tunnel_low_loss([0.05, 0.1, 0.08], [True, False, True])
    assert unconverged.verdict == "inconclusive"


def _blocks(k: int, within: float, noise: float) -> np.ndarray:
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    half = math.ceil(k / 2)
    c = np.where((i < half) == (j < half), within, 0.0) + noise * RNG.normal(size=(k, k))
    c = (c + c.T) / 2
    np.fill_diagonal(c, 1.0)
    return c


def test_two_blocks_controls() -> None:
    k = 9
    half = math.ceil(k / 2)
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    block_mats = [_blocks(k, 0.7, 0.05) for _ in range(3)]
    decay_mats = [rho ** np.abs(i - j) for rho in (0.6, 0.68, 0.75)]

    def null(mats: list[np.ndarray]) -> np.ndarray:  # split points in random orders
        rng = np.random.default_rng(1)
        draws = []
        for c in mats:
            orders = [rng.permutation(k) for _ in range(100)]
            draws.append([equal_lag_contrast(c[np.ix_(o, o)], half) for o in orders])
        return np.asarray(draws)

    blocks = [equal_lag_contrast(c, half) for c in block_mats]
    decaying = [equal_lag_contrast(c, half) for c in decay_mats]
    assert decide_two_blocks(blocks, null(block_mats)).verdict == "holds"
    assert decide_two_blocks(decaying, null(decay_mats)).verdict != "holds"


def test_label_changes_controls() -> None:
    t = np.linspace(0, 1, 41)
    d_end = 0.3
    plateau = midpoint_share(
        np.minimum(2 * t, 1) * d_end, np.minimum(2 * (1 - t), 1) * d_end, t, d_end
    )
    linear = midpoint_share(t * d_end, (1 - t) * d_end, t, d_end)
    assert plateau == pytest.approx(1.0) and linear == pytest.approx(0.5)
    wobble = [plateau + 0.05, plateau - 0.04, plateau]
    assert decide_label_changes(wobble, [d_end] * 3, [linear] * 3).verdict == "holds"
    assert decide_label_changes([0.5, 0.52, 0.48], [d_end] * 3, [linear] * 3).verdict == "fails"
    # Endpoints that agree leave nothing to measure.
    assert decide_label_changes(wobble, [0.01] * 3, [linear] * 3).verdict == "inconclusive"


def _counts(eigenvalues: np.ndarray) -> dict[str, float]:
    return {t: float((eigenvalues > float(t)).sum()) for t in ("0.03", "0.05", "0.1")}


def test_short_dirs_controls() -> None:
    ends = np.abs(RNG.normal(0, 0.03, size=500))
    middle = np.abs(RNG.normal(0, 0.08, size=500))  # more curvature: more short directions
    more = [
        short_dir_log_ratio(_counts(middle * s), _counts(ends), ("0.03", "0.05", "0.1"))
        for s in (0.9, 1.0, 1.1)
    ]
    flat = [
        short_dir_log_ratio(_counts(ends * s), _counts(ends), ("0.03", "0.05", "0.1"))
        for s in (0.98, 1.0, 1.02)
    ]
    null = [0.01, -0.01, 0.0]
    assert decide_short_dirs(more, [True] * 3, null).verdict == "holds"
    assert decide_short_dirs(flat, [True] * 3, null).verdict != "holds"
    assert decide_short_dirs(more, [True, False, True], null).verdict == "inconclusive"


# --------------------------------------------------------------------------- A5 connectors


def test_connector_controls() -> None:
    hull = [15.0, 18.0, 20.0]
    assert decide_connector_low_loss([1.2, 1.3, 1.1], hull, [True] * 3).verdict == "holds"
    assert decide_connector_low_loss([9.0, 8.0, 10.0], hull, [True] * 3).verdict == "fails"
    assert decide_connector_low_loss([1.2, 1.3, 1.1], hull, [False]).verdict == "inconclusive"
    rising = [[240.0, 570.0, 980.0], [250.0, 600.0, 900.0], [230.0, 500.0, 1000.0]]
    from lossatlas.analysis.statistics import rank_slope

    slope = lambda c: rank_slope(c, log=True)  # noqa: E731
    permuted = permutation_control("perm", rising, slope, 0.0, "above", seed=0)
    assert (
        decide_connector_short_dirs([slope(c) for c in rising], [True] * 3, permuted).verdict
        == "holds"
    )
    flat = [[500.0, 510.0, 495.0], [480.0, 470.0, 490.0], [505.0, 500.0, 500.0]]
    assert (
        decide_connector_short_dirs([slope(c) for c in flat], [True] * 3, permuted).verdict
        != "holds"
    )


# --------------------------------------------------------------------------- A6 sweep


def _curve(r0: float, r1: float, width) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    r = np.linspace(r0, r1, 6)
    return {"weight_norm": r, "width_mean": width(r)}


def test_widths_are_compared_at_a_common_norm() -> None:
    # Width depends on the norm only, and larger settings end at larger norms: the final widths
    # grow with the setting, yet at a common norm there is no trend (the audit's confound).
    confounded = [_curve(5, 10 + 5 * i, lambda r: 0.5 * r) for i in range(4)]
    finals = [c["width_mean"][-1] for c in confounded]
    assert np.all(np.diff(finals) > 0)
    trend, at, _ = trend_at_common_norm(confounded, +1)
    assert trend == pytest.approx(0.0, abs=1e-12) and 5 <= at <= 10
    # A real effect: wider at the same norm for larger settings.
    real = [_curve(5, 10 + 5 * i, lambda r, i=i: (1 + 0.3 * i) * r) for i in range(4)]
    assert trend_at_common_norm(real, +1)[0] > 0.1
    assert trend_at_common_norm(real, -1)[0] < -0.1
    # No overlap of norms: nothing to compare.
    apart = [_curve(1, 2, np.sqrt), _curve(3, 4, np.sqrt)]
    assert math.isnan(trend_at_common_norm(apart, +1)[0])


def test_trend_decision_controls() -> None:
    real = [
        [_curve(5, 10 + 5 * i, lambda r, i=i, s=s: (1 + 0.3 * i) * s * r) for i in range(4)]
        for s in (0.9, 1.0, 1.1)
    ]
    flat = [
        [_curve(5, 10 + 5 * i, lambda r: 0.5 * r + 0.01 * RNG.normal()) for i in range(4)]
        for _ in range(3)
    ]
    stat = lambda curves: trend_at_common_norm(curves, +1)[0]  # noqa: E731
    permuted = permutation_control("perm", real, stat, 0.0, "above", seed=0)
    assert permuted.verdict != "holds"
    assert decide_trend([stat(c) for c in real], permuted, "LR").verdict == "holds"
    assert decide_trend([stat(c) for c in flat], permuted, "LR").verdict != "holds"


def _jagged(r: np.ndarray) -> np.ndarray:
    """A width that rises and falls between snapshots, as measured curves do."""
    return 2.5 + 0.4 * np.sin(2.2 * r)


def _trends_and_resolutions(replicates: list[list[dict[str, np.ndarray]]]):  # type: ignore[no-untyped-def]
    """Per replicate: the trend at the common norm and its resolution."""
    trends, resolutions = [], []
    for curves in replicates:
        trend, at, widths = trend_at_common_norm(curves, +1)
        trends.append(trend)
        resolutions.append(trend_resolution(curves, at, widths))
    return trends, resolutions


def test_trend_resolution_controls() -> None:
    # Negative control (the audit's L2 case): every setting follows the same jagged curve,
    # shifted a little in R (stronger L2 ends at a smaller norm after the same epochs). At a
    # common norm the coarse snapshots give each a slightly different width: a small trend
    # that is an artefact of reading between samples, and the resolution must cover it.
    shifted = [
        [_curve(4.6 - 0.05 * i, 10.8 - 0.3 * i + s, _jagged) for i in range(3)]
        for s in (0.0, 0.1, 0.2)
    ]
    trends, resolutions = _trends_and_resolutions(shifted)
    assert max(abs(t) for t in trends) > 0  # the artefact is there ...
    assert all(abs(t) < r for t, r in zip(trends, resolutions, strict=True))  # ... and covered
    stat = lambda curves: trend_at_common_norm(curves, +1)[0]  # noqa: E731
    permuted = permutation_control("perm", shifted, stat, 0.0, "above", seed=0)
    assert decide_trend(trends, permuted, "L2", float(np.mean(resolutions))).verdict == (
        "inconclusive"
    )
    # Positive control: a real effect (30% wider per rank at the same norm) on the same jagged
    # curves is far outside the resolution and still holds.
    real = [
        [_curve(4.6, 10.8 + s, lambda r, i=i: (1 + 0.3 * i) * _jagged(r)) for i in range(3)]
        for s in (0.0, 0.1, 0.2)
    ]
    trends, resolutions = _trends_and_resolutions(real)
    assert all(t > r for t, r in zip(trends, resolutions, strict=True))
    permuted = permutation_control("perm", real, stat, 0.0, "above", seed=0)
    assert decide_trend(trends, permuted, "L2", float(np.mean(resolutions))).verdict == "holds"
    # Straight curves are read exactly: no resolution limit.
    straight = [_curve(5, 10 + 5 * i, lambda r: 0.5 * r) for i in range(3)]
    _, at, widths = trend_at_common_norm(straight, +1)
    assert trend_resolution(straight, at, widths) == pytest.approx(0.0, abs=1e-12)


def test_collapse_controls() -> None:
    def family(scale):  # type: ignore[no-untyped-def]
        return {
            f: _curve(3 * math.sqrt(f), 9 * math.sqrt(f), lambda r, f=f: scale(r, f))
            for f in (0.5, 1.0, 2.0)
        }

    collapses = family(lambda r, f: np.log1p(r / math.sqrt(f)))  # width = g(R / sqrt f)
    plain = family(lambda r, f: np.log1p(r))  # width = g(R): no collapse under R / sqrt f
    assert collapse_log_ratio(collapses) < -0.5
    assert collapse_log_ratio(plain) > 0.5
    null = control("perm", [0.1, -0.1, 0.05], 0.0, "below")
    assert decide_collapse([collapse_log_ratio(collapses)] * 3, null).verdict == "holds"
    assert decide_collapse([collapse_log_ratio(plain)] * 3, null).verdict == "fails"


# --------------------------------------------------------------------------- A7 ensembles


def _ensemble_arrays(sign: float, *, unstable_last: bool = False) -> dict[str, np.ndarray]:
    lr = np.array([0.01, 0.03, 0.1, 0.2, 0.4])
    rank = np.arange(5.0)
    final = np.full(5, 0.3)
    if unstable_last:
        final[-1] = 5.0  # above twice the start's: left out by the rule
    return {
        "lr_max": lr,
        "diverged": np.zeros(5, dtype=bool),
        "start_train_loss": np.full(5, 0.3),
        "final_train_loss": final,
        "ensemble_acc": 0.8 + 0.01 * sign * rank,
        "single_acc_last": 0.8 - 0.01 * sign * rank,
        "swa_minus_ensemble": -0.01 * sign * rank,
        "angle_mean": 5.0 + 3.0 * sign * rank,
        "pairwise_disagreement": 0.05 + 0.01 * rank,
        "pairwise_angle": 10.0 + rank,
        "independent/pairwise_disagreement": np.asarray(0.3 if sign > 0 else 0.01),
        "independent/pairwise_angle": np.asarray(80.0 if sign > 0 else 1.0),
        "fge/pairwise_disagreement": np.asarray(0.02),
        "fge/pairwise_angle": np.asarray(3.0),
    }


def test_stability_rule_leaves_out_an_lr_that_did_not_settle() -> None:
    keep = stable_lr_max(_ensemble_arrays(+1, unstable_last=True))
    assert keep.tolist() == [True, True, True, True, False]


def test_ensemble_vs_swa_controls() -> None:
    jitter = (0.9, 1.0, 1.1)
    positive = [vs_swa_parts(_ensemble_arrays(s)) for s in jitter]
    negative = [vs_swa_parts(_ensemble_arrays(-s)) for s in jitter]
    null = control("perm", [0.001, -0.002, 0.0], 0.0, "below")
    assert decide_ensemble_vs_swa(positive, null)[0].verdict == "holds"
    assert decide_ensemble_vs_swa(negative, null)[0].verdict == "fails"


def test_ensemble_baselines_controls() -> None:
    positive = [baseline_parts(_ensemble_arrays(s)) for s in (0.9, 1.0, 1.1)]
    negative = [baseline_parts(_ensemble_arrays(-s)) for s in (0.9, 1.0, 1.1)]
    assert decide_ensemble_baselines(positive)[0].verdict == "holds"
    assert decide_ensemble_baselines(negative)[0].verdict == "fails"
