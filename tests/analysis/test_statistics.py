"""The statistics behind the verdicts, against exact answers and scipy's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lossatlas.analysis.statistics import (
    all_of,
    bootstrap_interval,
    common_range,
    compare,
    control,
    decide,
    equal_lag_contrast,
    interpolate_at,
    interpolation_error,
    mean_interval,
    permutation_control,
    permuted,
    proportion_interval,
    rank_slope,
)


def test_mean_interval_is_the_student_t_interval() -> None:
    values = [0.2, 0.5, 0.9, 0.4]
    found = mean_interval(values)
    mean, sem = np.mean(values), stats.sem(values)
    half = stats.t.ppf(0.975, df=3) * sem
    assert found.estimate == pytest.approx(mean)
    assert (found.low, found.high) == pytest.approx((mean - half, mean + half))
    assert found.n == 4


def test_mean_interval_edge_cases() -> None:
    assert mean_interval([1.0, 1.0, 1.0]).bounds == (1.0, 1.0)
    single = mean_interval([2.0, math.nan])
    assert single.n == 1 and single.bounds is None
    assert mean_interval([]).n == 0


def test_compare_holds_fails_and_straddles() -> None:
    assert compare(mean_interval([1.0, 1.1, 1.2]), 0.0, "above") == "holds"
    assert compare(mean_interval([-1.0, -1.1, -1.2]), 0.0, "above") == "fails"
    assert compare(mean_interval([-1.0, 1.0, 0.1]), 0.0, "above") == "inconclusive"
    assert compare(mean_interval([-1.0, -1.1, -1.2]), 0.0, "below") == "holds"
    assert compare(mean_interval([3.0]), 0.0, "above") == "inconclusive"  # no interval


def test_a_holding_control_makes_the_claim_inconclusive() -> None:
    strong = [1.0, 1.1, 1.2]
    fine = decide(
        strong, 0.0, "above", "x", control=control("null", [0.0, -0.1, 0.1], 0.0, "above")
    )
    assert fine.verdict == "holds" and fine.evidence.control.verdict == "inconclusive"
    blind = decide(strong, 0.0, "above", "x", control=control("null", strong, 0.0, "above"))
    assert blind.verdict == "inconclusive"


def test_proportion_interval_is_wilson() -> None:
    found = proportion_interval(9, 12)
    ci = stats.binomtest(9, 12).proportion_ci(method="wilson")
    assert (found.low, found.high) == pytest.approx((ci.low, ci.high))


def test_bootstrap_interval_covers_and_is_seeded() -> None:
    data = np.arange(10.0)
    a = bootstrap_interval(data, np.mean, seed=1)
    b = bootstrap_interval(data, np.mean, seed=1)
    assert a == b and a.low < 4.5 < a.high


def test_all_of() -> None:
    assert all_of(["holds", "holds"]) == "holds"
    assert all_of(["holds", "fails"]) == "fails"
    assert all_of(["holds", "inconclusive"]) == "inconclusive"
    assert all_of([]) == "inconclusive"


def test_rank_slope_matches_a_least_squares_fit() -> None:
    assert rank_slope([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert rank_slope([1.0, math.e, math.e**2], log=True) == pytest.approx(1.0)
    assert rank_slope([5.0, 3.0], positions=[0, 2]) == pytest.approx(-1.0)
    assert math.isnan(rank_slope([1.0, math.nan]))


def test_interpolation_and_common_range() -> None:
    assert interpolate_at([3, 1, 2], [30, 10, 20], 2.5) == pytest.approx(25.0)
    assert math.isnan(interpolate_at([1, 2], [1, 2], 3.0))  # no extrapolation
    assert common_range([[1, 5], [2, 7], [0, 4]]) == (2.0, 4.0)
    assert common_range([[1, 2], [3, 4]]) is None


def test_interpolation_error_bounds_the_true_error() -> None:
    x = np.array([0.0, 1.0, 2.5, 3.0, 4.5])
    # A straight line is interpolated exactly: the bound is 0.
    assert interpolation_error(x, 2 * x + 1, 1.7) == pytest.approx(0.0, abs=1e-12)
    # A quadratic has one constant y'' = 2a: the bound equals the true error exactly.
    a = 0.7
    y = a * x**2
    for at in (0.3, 1.7, 2.8, 4.0):
        true_error = abs(interpolate_at(x, y, at) - a * at**2)
        assert interpolation_error(x, y, at) == pytest.approx(true_error, rel=1e-9)
    # Smooth but not quadratic: still a bound, and it shrinks as the samples get denser.
    coarse, fine = np.linspace(0, 3, 6), np.linspace(0, 3, 31)
    at = 1.37
    for grid in (coarse, fine):
        assert abs(interpolate_at(grid, np.sin(grid), at) - np.sin(at)) <= (
            interpolation_error(grid, np.sin(grid), at) * 1.5
        )
    assert (
        interpolation_error(fine, np.sin(fine), at)
        < interpolation_error(coarse, np.sin(coarse), at) / 10
    )
    assert interpolation_error(x, y, 2.5) == 0.0  # at a sample point
    assert math.isnan(interpolation_error([1, 2], [1, 2], 1.5))  # no bend to estimate
    assert math.isnan(interpolation_error(x, y, 9.0))  # outside the curve


def test_decide_is_inconclusive_within_the_instruments_resolution() -> None:
    tight = [0.010, 0.011, 0.0105]  # replicates agree: their interval lies above 0
    assert decide(tight, 0.0, "above", "s").verdict == "holds"
    unresolved = decide(tight, 0.0, "above", "s", resolution=0.02)
    assert unresolved.verdict == "inconclusive" and unresolved.evidence.resolution == 0.02
    assert decide(tight, 0.0, "above", "s", resolution=0.005).verdict == "holds"
    assert decide([-x for x in tight], 0.0, "above", "s", resolution=0.02).verdict == (
        "inconclusive"
    )
    assert decide([-x for x in tight], 0.0, "above", "s", resolution=0.005).verdict == "fails"
    assert decide(tight, 0.0, "above", "s", resolution=math.nan).verdict == "inconclusive"


def test_equal_lag_contrast_separates_blocks_from_decay() -> None:
    k = 9
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    decay = 0.68 ** np.abs(i - j)  # the audit's counterexample: no block edge
    assert equal_lag_contrast(decay, 5) == pytest.approx(0.0, abs=1e-12)
    block = np.where((i < 5) == (j < 5), 0.8, 0.0)
    np.fill_diagonal(block, 1.0)
    assert equal_lag_contrast(block, 5) == pytest.approx(0.8)


def test_permutations_draw_every_order_and_control_is_seeded() -> None:
    rng = np.random.default_rng(0)
    draws = [tuple(permuted([1, 2, 3], rng)) for _ in range(600)]
    counts = {order: draws.count(order) for order in set(draws)}
    assert len(counts) == 6 and min(counts.values()) > 60  # the identity too, ~100 each
    items = [[1.0, 2.0, 3.0, 4.0]] * 3
    a = permutation_control("perm", items, rank_slope, 0.0, "above", seed=3)
    b = permutation_control("perm", items, rank_slope, 0.0, "above", seed=3)
    assert a == b
    low, high = a.details["null_95"]
    assert low < 0 < high  # the null of a slope is centred on 0


def test_a_two_setting_trend_cannot_beat_its_permutation_null() -> None:
    """Two settings x three replicates: the permutation null holds the observed labelling
    (each replicate's sign flips or not, 8 equally likely means), so a slope that every
    replicate shares by chance is not beyond it. The negative control of the defect: a null
    without the identity was the observed slope reversed, and the claim held."""
    items = [[1.0, 1.3], [2.0, 2.31], [0.5, 0.79]]  # every replicate rises, by whatever cause
    slopes = [rank_slope(pair) for pair in items]
    null = permutation_control("perm", items, rank_slope, 0.0, "above", seed=0)
    assert null.details["null_95"][1] == pytest.approx(float(np.mean(slopes)))
    assert decide(slopes, 0.0, "above", "slope").verdict == "holds"  # the interval alone
    assert decide(slopes, 0.0, "above", "slope", control=null).verdict == "inconclusive"
    # Positive control: four settings, the same rise in every replicate, beat their null.
    rising = [[1.0, 1.3, 1.6, 1.9], [2.0, 2.2, 2.45, 2.6], [0.5, 0.9, 1.2, 1.6]]
    null = permutation_control("perm", rising, rank_slope, 0.0, "above", seed=0)
    trend = [rank_slope(values) for values in rising]
    assert decide(trend, 0.0, "above", "slope", control=null).verdict == "holds"
