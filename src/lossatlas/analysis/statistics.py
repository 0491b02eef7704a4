"""The statistics behind every verdict: intervals over replicates, trends, controls, matching.

``../shared/CLAIMS.md`` asks each claim for an estimate, its 95% interval over independent
replicates, a threshold, and a control. This module turns arrays into those: scipy.stats does the
intervals (Student's t for means, Wilson for proportions, the bootstrap for other statistics),
and :func:`decide` compares an interval with a threshold: ``holds`` when the whole interval is on
the claimed side, ``fails`` when it is wholly on the other side, and ``inconclusive`` when it
straddles the threshold or there are too few replicates to have one.

Nothing here imports torch: inputs are numpy arrays (or lists), outputs are numbers and records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from lossatlas.claims import Control, Decision, Evidence, Verdict

__all__ = [
    "Direction",
    "Interval",
    "all_of",
    "bootstrap_interval",
    "common_range",
    "compare",
    "control",
    "decide",
    "equal_lag_contrast",
    "interpolate_at",
    "interpolation_error",
    "log_ratio",
    "mean_interval",
    "null_control",
    "permutation_control",
    "permutation_null",
    "permuted",
    "proportion_interval",
    "rank_slope",
    "relative_gap",
]

Direction = Literal["above", "below"]
"""Which side of the threshold the claim puts the estimate on."""

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate and its confidence interval over ``n`` replicates.

    ``low`` and ``high`` are NaN when there is no interval (fewer than two finite replicates).
    """

    estimate: float
    low: float
    high: float
    n: int
    method: str

    @property
    def bounds(self) -> tuple[float, float] | None:
        """``(low, high)``, or ``None`` without an interval."""
        if math.isfinite(self.low) and math.isfinite(self.high):
            return (self.low, self.high)
        return None


def _finite(values: Iterable[float]) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of the finite ``values`` and its Student-t interval (scipy.stats.t, sem).

    With identical values the interval is the single point; with fewer than two values there is
    none (NaN bounds).
    """
    finite = _finite(values)
    n = int(finite.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "t")
    mean = float(finite.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, "t")
    if float(np.ptp(finite)) == 0.0:
        return Interval(mean, mean, mean, n, "t")
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=stats.sem(finite))
    return Interval(mean, float(low), float(high), n, "t")


def proportion_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """A success rate and its Wilson interval (scipy.stats.binomtest)."""
    if trials <= 0:
        return Interval(math.nan, math.nan, math.nan, 0, "wilson")
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(
        confidence_level=confidence, method="wilson"
    )
    return Interval(successes / trials, float(ci.low), float(ci.high), int(trials), "wilson")


def bootstrap_interval(
    values: Sequence[Any] | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    *,
    seed: int,
    confidence: float = CONFIDENCE,
    resamples: int = 2000,
) -> Interval:
    """``statistic`` of ``values`` (replicates along axis 0) and its percentile bootstrap
    interval (scipy.stats.bootstrap), resampling replicates with a seeded generator."""
    data = np.asarray(values, dtype=np.float64)
    n = int(data.shape[0])
    estimate = float(statistic(data))
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, "bootstrap")
    low, high = _bootstrap_indices(data, statistic, seed, confidence, resamples)
    return Interval(estimate, low, high, n, "bootstrap")


def _bootstrap_indices(
    data: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    seed: int,
    confidence: float,
    resamples: int,
) -> tuple[float, float]:
    # scipy.stats.bootstrap resamples the data it is given; resampling row indices lets the
    # statistic see whole replicates (rows) of any shape.
    index = np.arange(data.shape[0], dtype=np.float64)
    result = stats.bootstrap(
        (index,),
        lambda idx: statistic(data[np.asarray(idx, dtype=int)]),
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(interval: Interval, threshold: float, direction: Direction) -> Verdict:
    """``holds`` when the interval lies wholly on the claimed side of ``threshold``, ``fails``
    when it lies wholly on the other side (touching counts as the other side), else
    ``inconclusive`` (it straddles the threshold, or there is no interval)."""
    bounds = interval.bounds
    if bounds is None:
        return "inconclusive"
    low, high = bounds
    if direction == "above":
        if low > threshold:
            return "holds"
        return "fails" if high <= threshold else "inconclusive"
    if high < threshold:
        return "holds"
    return "fails" if low >= threshold else "inconclusive"


def decide(
    values: Iterable[float],
    threshold: float,
    direction: Direction,
    statistic: str,
    *,
    control: Control | None = None,
    interval: Interval | None = None,
    resolution: float | None = None,
) -> Decision:
    """The verdict on ``values`` (one per replicate) against ``threshold``, with its evidence.

    ``interval`` replaces the default Student-t interval of the mean (e.g. a bootstrap one).
    A claim whose ``control`` (the same test on data without the effect) also holds cannot hold
    itself: the test does not tell the effect from its absence there, so the verdict is
    ``inconclusive``; so is one whose estimate lies within the control's null range
    (``control.details["null_95"]``, see :func:`null_control`).

    ``resolution`` is the instrument's resolution on the estimate (CLAIMS.md rule 5: the
    estimator's error must be smaller than the effect it decides): an estimate within it of
    ``threshold`` is ``inconclusive``, whether its interval says holds or fails, because the
    replicates can agree on an effect the instrument cannot see (a shared bias of the
    instrument is not in their spread). A NaN resolution cannot vouch for anything either.
    """
    found = interval if interval is not None else mean_interval(values)
    estimate = found.estimate if math.isfinite(found.estimate) else None
    verdict = compare(found, threshold, direction)
    if resolution is not None and verdict != "inconclusive":
        unresolved = not math.isfinite(resolution) or (
            abs(found.estimate - threshold) <= resolution
        )
        if unresolved:
            verdict = "inconclusive"
    if verdict == "holds" and control is not None:
        null = control.details.get("null_95")
        beyond_null = null is None or (
            found.estimate > null[1] if direction == "above" else found.estimate < null[0]
        )
        if control.verdict == "holds" or not beyond_null:
            verdict = "inconclusive"
    return Decision(
        verdict,
        Evidence(
            statistic=statistic,
            estimate=estimate,
            ci95=found.bounds,
            threshold=threshold,
            replicates=found.n,
            control=control,
            resolution=None if resolution is None else float(resolution),
        ),
    )


def control(
    name: str,
    values: Iterable[float],
    threshold: float,
    direction: Direction,
    **details: Any,
) -> Control:
    """The claim's test run on ``values`` from data without the effect (one per replicate).

    A sound test says ``fails`` (or at worst ``inconclusive``) here; ``details`` keeps anything
    else worth reporting (a null's 95% range, ...).
    """
    found = mean_interval(values)
    verdict = compare(found, threshold, direction)
    estimate = found.estimate if math.isfinite(found.estimate) else None
    return Control(name, estimate, verdict, {"ci95": found.bounds, **details})


def all_of(verdicts: Iterable[Verdict]) -> Verdict:
    """A verdict made of parts: ``fails`` if any part fails, ``holds`` if all hold, else
    ``inconclusive``."""
    parts = list(verdicts)
    if any(v == "fails" for v in parts):
        return "fails"
    if parts and all(v == "holds" for v in parts):
        return "holds"
    return "inconclusive"


def rank_slope(
    values: Sequence[float] | np.ndarray,
    *,
    log: bool = False,
    positions: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Least-squares slope of ``values`` (optionally their log) against their position.

    The trend of a quantity over ordered settings (learning rates, L2, batch sizes), on a scale
    that does not depend on the settings' spacing. ``positions`` are the settings' ranks
    (default ``0 .. n-1``; pass them when some settings were left out). NaN with fewer than two
    finite values.
    """
    y = np.asarray(values, dtype=np.float64)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(y > 0, np.log(y), np.nan)
    x = (
        np.arange(y.size, dtype=np.float64)
        if positions is None
        else np.asarray(positions, dtype=np.float64)
    )
    keep = np.isfinite(y)
    if keep.sum() < 2:
        return math.nan
    if float(np.ptp(y[keep])) == 0.0:
        return 0.0
    return float(stats.linregress(x[keep], y[keep]).slope)


def log_ratio(a: float, b: float) -> float:
    """``log(a / b)``; NaN unless both are positive and finite."""
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b <= 0:
        return math.nan
    return math.log(a / b)


def relative_gap(value: float, reference: float) -> float:
    """``(value - reference) / reference``: how far a loss is above its reference, relatively."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return math.nan
    return (value - reference) / reference


def interpolate_at(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, at: float
) -> float:
    """``y`` at ``x = at`` by linear interpolation of the curve ``(x, y)`` sorted by ``x``.

    NaN when ``at`` lies outside the curve's range (no extrapolation) or the curve has fewer than
    two finite points.
    """
    curve = _curve_around(x, y, at, min_points=2)
    return math.nan if curve is None else float(np.interp(at, *curve))


def _curve_around(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    at: float,
    *,
    min_points: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The finite points of ``(x, y)`` sorted by ``x``, or ``None`` when there are fewer than
    ``min_points`` or ``at`` lies outside their range."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size < min_points or not math.isfinite(at) or at < xs.min() or at > xs.max():
        return None
    order = np.argsort(xs, kind="stable")
    return xs[order], ys[order]


def interpolation_error(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, at: float
) -> float:
    """A bound on the error of :func:`interpolate_at` at ``at``, from the curve's own curvature.

    Linear interpolation on ``[x_i, x_(i+1)]`` errs by ``(at - x_i)(x_(i+1) - at) / 2 * |y''|``
    (the textbook remainder). ``|y''|`` is estimated as twice the largest absolute second
    divided difference of the sample triples that contain the segment, so a curve that bends
    sharply between coarse samples gets a large bound, and a straight one gets 0.

    Returns the bound in the units of ``y``: 0 at a sample point, NaN where ``interpolate_at``
    is NaN or the curve has fewer than three finite points (the bend cannot be estimated).
    """
    curve = _curve_around(x, y, at, min_points=3)
    if curve is None:
        return math.nan
    xs, ys = curve
    i = int(np.clip(np.searchsorted(xs, at, side="right") - 1, 0, xs.size - 2))
    spread = (at - xs[i]) * (xs[i + 1] - at)
    if spread <= 0:
        return 0.0
    bends = []
    for j in (i - 1, i):  # the triples (j, j + 1, j + 2) that contain the segment (i, i + 1)
        if j >= 0 and j + 2 < xs.size and xs[j + 2] > xs[j]:
            left = (ys[j + 1] - ys[j]) / max(xs[j + 1] - xs[j], np.finfo(float).tiny)
            right = (ys[j + 2] - ys[j + 1]) / max(xs[j + 2] - xs[j + 1], np.finfo(float).tiny)
            bends.append(abs(2.0 * (right - left) / (xs[j + 2] - xs[j])))
    if not bends:
        return math.nan
    return float(spread / 2.0 * max(bends))


def common_range(curves: Iterable[Sequence[float] | np.ndarray]) -> tuple[float, float] | None:
    """The range of ``x`` that every curve covers, ``(max of minima, min of maxima)``, or
    ``None`` when the curves do not overlap."""
    lows, highs = [], []
    for x in curves:
        finite = _finite(x)
        if finite.size == 0:
            return None
        lows.append(float(finite.min()))
        highs.append(float(finite.max()))
    if not lows:
        return None
    lo, hi = max(lows), min(highs)
    return (lo, hi) if lo <= hi else None


def permutation_null(
    statistic: Callable[[np.random.Generator], float], *, seed: int, draws: int = 200
) -> np.ndarray:
    """``draws`` values of ``statistic(rng)`` under a seeded generator: the statistic computed
    on data whose labels ``statistic`` permutes with ``rng`` (a permutation null)."""
    rng = np.random.default_rng(seed)
    return np.asarray([statistic(rng) for _ in range(draws)], dtype=np.float64)


def equal_lag_contrast(cosines: np.ndarray, first_block: int) -> float:
    """Mean over lags of (mean cosine of pairs within a block - mean of pairs across the blocks).

    Pairs ``(i, i + lag)`` are compared at equal lag, so a matrix that only decays with the
    distance between split points (no block edge) scores 0 exactly, while two blocks (high
    within, low across) score high. Blocks: split points ``< first_block`` and the rest. Lags
    with no within or no across pair are skipped; NaN if none is left.
    """
    c = np.asarray(cosines, dtype=np.float64)
    k = c.shape[0]
    diffs = []
    for lag in range(1, k):
        within: list[float] = []
        across: list[float] = []
        for i in range(k - lag):
            j = i + lag
            same = (i < first_block) == (j < first_block)
            (within if same else across).append(c[i, j])
        within_f = [v for v in within if math.isfinite(v)]
        across_f = [v for v in across if math.isfinite(v)]
        if within_f and across_f:
            diffs.append(float(np.mean(within_f)) - float(np.mean(across_f)))
    return float(np.mean(diffs)) if diffs else math.nan


def permuted(items: Sequence[Any], rng: np.random.Generator) -> list[Any]:
    """``items`` in a uniformly random order, their own included.

    Under the null hypothesis every labelling is equally likely, the observed one too, so a
    permutation test's null draws from all of them. Leaving the observed order out biases the
    null away from the estimate: with two settings it was always the observed trend reversed,
    which any positive trend beats, noise included (a 2-level sweep's control then vouched
    for whatever sign the replicates happened to share).
    """
    return [items[i] for i in rng.permutation(len(items))]


def null_control(name: str, draws: np.ndarray, threshold: float, direction: Direction) -> Control:
    """A control from a null distribution: ``draws`` ``(R, n)`` of each replicate's statistic on
    data without the effect (``n`` draws per replicate, e.g. label permutations).

    The null of the claim's estimate (the mean over replicates) is the mean over replicates of
    draw ``j``, for every ``j``; its mean is the control's estimate and its 2.5-97.5% range the
    interval the control is decided on (a null centred on the threshold straddles it).
    ``details["null_95"]`` keeps that range: :func:`decide` then requires a holding claim's
    estimate to lie beyond it (a permutation test on top of the interval).
    """
    table = np.atleast_2d(np.asarray(draws, dtype=np.float64))
    known = np.isfinite(table)
    counts = known.sum(axis=0)
    sums = np.where(known, table, 0.0).sum(axis=0)
    pooled = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)  # NaN-aware mean
    finite = pooled[np.isfinite(pooled)]
    if finite.size == 0:
        return Control(name, None, "inconclusive", {"null_95": None})
    low, high = float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))
    found = Interval(float(finite.mean()), low, high, int(table.shape[0]), "null")
    return Control(
        name,
        found.estimate,
        compare(found, threshold, direction),
        {"null_95": [low, high], "draws": int(finite.size)},
    )


def permutation_control(
    name: str,
    items_by_replicate: Sequence[Sequence[Any]],
    statistic: Callable[[list[Any]], float],
    threshold: float,
    direction: Direction,
    *,
    seed: int,
    draws: int = 200,
) -> Control:
    """The claim's test on data whose setting labels are permuted: the control of a trend.

    Each replicate's ``items`` (ordered by their setting) are shuffled ``draws`` times with a
    seeded generator, and ``statistic`` is computed on each shuffle (see :func:`null_control`).
    """
    rng = np.random.default_rng(seed)
    table = np.full((len(items_by_replicate), draws), np.nan)
    for r, items in enumerate(items_by_replicate):
        if len(items) < 2:
            continue
        for j in range(draws):
            table[r, j] = statistic(permuted(items, rng))
    return null_control(name, table, threshold, direction)
