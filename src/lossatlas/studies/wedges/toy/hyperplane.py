"""A1 (a): optimisation on random d-dim hyperplanes succeeds once d reaches D - n.

Claims ``toy.hyperplane_threshold`` and, over rotated / thick / random-width / other ``(D, n)``
landscapes, ``toy.hyperplane_threshold_robust``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor

from lossatlas.analysis.statistics import Interval, all_of, compare, proportion_interval
from lossatlas.claims import Claim, Control, Decision, Evidence, Verdict
from lossatlas.seeding import make_generator
from lossatlas.studies.wedges.config import ToyConfig, ToyVariant
from lossatlas.studies.wedges.toy._common import (
    DTYPE,
    PAPER_SETUP,
    ToyResult,
    adam_descent,
    as_numpy,
    landscape_of,
    main_landscape,
    with_threads,
)
from lossatlas.studies.wedges.toy.landscape import WedgeLandscape


@dataclass
class _Sweep:
    d: np.ndarray  # (D,) hyperplane dimensions 1..D
    success_rate: np.ndarray  # (D,)
    relative_loss: np.ndarray  # (D, trials) final loss / loss at P0
    successes: np.ndarray  # (D,) successful planes per d
    d_lim: int  # smallest d with success rate >= 0.5 (-1 if none)


class _SweepOptions(TypedDict):
    """The optimisation knobs of :func:`_hyperplane_sweep`, shared by every landscape."""

    trials: int
    steps: int
    lr: float
    tol: float
    init_scale: float


def _hyperplane_sweep(
    landscape: WedgeLandscape,
    generator: torch.Generator,
    *,
    trials: int,
    steps: int,
    lr: float,
    tol: float,
    init_scale: float,
) -> _Sweep:
    """Optimise ``θ`` on ``trials`` random d-planes for every ``d = 1..D``, all in one batch.

    Every trial gets a full (D, D) Gaussian basis whose rows past ``d`` are zeroed, so the
    ``D * trials`` problems share one (B, D) parameter tensor; masked coordinates of ``θ`` get
    zero gradient and stay at 0. Rows have entries ``N(0, 1/D)`` (norm ≈ 1), so ``θ`` is
    measured in the same units as ``P``.
    """
    dim = landscape.dim
    count = dim * trials
    d_of = torch.arange(1, dim + 1).repeat_interleave(trials)  # (B,)
    basis = torch.randn(count, dim, dim, generator=generator, dtype=DTYPE) / math.sqrt(dim)
    row_mask = (torch.arange(dim)[None, :] < d_of[:, None]).to(DTYPE)  # (B, D): rows < d
    basis = basis * row_mask[:, :, None]
    origin = landscape.sample_init(count, generator, init_scale)  # P0 (B, D)

    def plane_loss(theta: Tensor) -> Tensor:
        return landscape.loss(torch.bmm(theta[:, None, :], basis)[:, 0] + origin)

    theta = adam_descent(
        plane_loss, torch.zeros(count, dim, dtype=DTYPE), steps=steps, lr=lr * init_scale
    )
    with torch.no_grad():
        relative = plane_loss(theta) / landscape.loss(origin)
    relative = relative.view(dim, trials)
    success = (relative < tol).to(DTYPE)
    rate = success.mean(1)
    reached = torch.nonzero(rate >= 0.5)
    d_lim = int(reached[0, 0]) + 1 if len(reached) else -1
    return _Sweep(
        d=np.arange(1, dim + 1),
        success_rate=as_numpy(rate),
        relative_loss=as_numpy(relative),
        successes=as_numpy(success.sum(1)).astype(int),
        d_lim=d_lim,
    )


def decide_threshold(
    successes: np.ndarray, trials: int, n_thin: int, control_successes: np.ndarray | None = None
) -> Decision:
    """``toy.hyperplane_threshold``: success is rare one step below ``D - n`` and common one
    step above it.

    ``successes`` ``(D,)`` counts successful planes per ``d = 1..D`` out of ``trials``. The
    claim holds when the Wilson 95% interval of the rate at ``d = D - n - 1`` lies below 1/2
    and the one at ``d = D - n + 1`` above 1/2; it fails when either lies wholly on the wrong
    side. ``d = D - n`` itself is ambiguous (see the note) and not tested. The evidence is the
    rate one step above; ``control_successes`` are the counts on a landscape with isolated
    minima (n = 0), where success needs d = D: tested at the same d, they must not hold.
    """

    def rate(counts: np.ndarray, d: int) -> Interval:
        if not 1 <= d <= counts.size:
            return Interval(math.nan, math.nan, math.nan, 0, "wilson")
        return proportion_interval(int(counts[d - 1]), trials)

    below, above = rate(successes, n_thin - 1), rate(successes, n_thin + 1)
    parts = [compare(below, 0.5, "below"), compare(above, 0.5, "above")]
    if n_thin - 1 < 1:  # nothing below to test: decided on the step above alone
        parts = parts[1:]
    found = None
    if control_successes is not None:
        control_rate = rate(control_successes, n_thin + 1)
        found = Control(
            "the same test on a landscape with isolated minima (n = 0), at d = D - n + 1",
            control_rate.estimate,
            compare(control_rate, 0.5, "above"),
            {"ci95": control_rate.bounds},
        )
    evidence = Evidence(
        statistic="success rate at d = D - n + 1 (and at D - n - 1, which must lie below 1/2)",
        estimate=above.estimate,
        ci95=above.bounds,
        threshold=0.5,
        replicates=trials,
        control=found,
    )
    return Decision(all_of(parts), evidence)


def decide_threshold_robust(
    landscapes: Sequence[tuple[np.ndarray, int]],
    trials: int,
    controls: Sequence[np.ndarray] | None = None,
) -> Decision:
    """``toy.hyperplane_threshold_robust``: the threshold test holds on every landscape.

    Args:
        landscapes: one ``(successes (D,), D - n)`` per landscape (the main one and each
            variant), ``successes`` counting successful planes per ``d = 1..D`` out of
            ``trials``.
        trials: random planes per ``d``.
        controls: per landscape, the counts on the same landscape with isolated minima
            (``n = 0``), tested against that landscape's ``D - n``; they must not hold.

    The verdict is :func:`decide_threshold`'s on every landscape combined (``fails`` if one
    fails, ``holds`` if all hold). The evidence is the success rate one step above ``D - n``
    pooled over every landscape's planes, with its Wilson 95% interval against 1/2; the control
    is the same combined test on the isolated-minima landscapes. If the control holds too, the
    test cannot tell wedges from isolated minima and the verdict is ``inconclusive``.
    """

    def combined(counts: Sequence[tuple[np.ndarray, int]]) -> tuple[Verdict, Interval]:
        verdicts = [decide_threshold(c, trials, n).verdict for c, n in counts]
        above = [int(c[n]) for c, n in counts if n + 1 <= c.size]  # rate at d = n + 1
        pooled = (
            proportion_interval(sum(above), trials * len(above))
            if above
            else Interval(math.nan, math.nan, math.nan, 0, "wilson")
        )
        return all_of(verdicts), pooled

    verdict, pooled = combined(landscapes)
    found = None
    if controls is not None:
        if len(controls) != len(landscapes):
            raise ValueError("one control per landscape is needed")
        control_verdict, control_rate = combined(
            [(c, n) for c, (_, n) in zip(controls, landscapes, strict=True)]
        )
        found = Control(
            "the same test on every landscape with isolated minima (n = 0), at its D - n + 1",
            control_rate.estimate if math.isfinite(control_rate.estimate) else None,
            control_verdict,
            {"ci95": control_rate.bounds},
        )
        if control_verdict == "holds" and verdict == "holds":
            verdict = "inconclusive"
    evidence = Evidence(
        statistic=(
            f"success rate at d = D - n + 1 pooled over {len(landscapes)} landscapes (the "
            "threshold test must hold on each)"
        ),
        estimate=pooled.estimate if math.isfinite(pooled.estimate) else None,
        ci95=pooled.bounds,
        threshold=0.5,
        replicates=trials * len(landscapes),
        control=found,
    )
    return Decision(verdict, evidence)


_THRESHOLD_CRITERION = (
    "success: final loss < tol x loss at P0; holds if the Wilson 95% interval of the success "
    "rate over the random planes lies below 1/2 at d = D - n - 1 and above 1/2 at d = D - n + 1; "
    "fails if either lies wholly on the wrong side; d = D - n itself is not tested (see notes)"
)
_THRESHOLD_NOTE = (
    "Counting equations: with eps = 0 a d-plane meets one n-dim wedge when d + n >= D "
    "(D - n equations, d unknowns), and at d = D - n every local minimum on the plane is a zero, "
    "so geometry puts the first successful d at D - n (success iff d >= D - n). The paper's "
    "wording 'succeeds when d > D - n' is one step stricter; the criterion accepts both. At "
    "d = D - n the zero is a single, often badly conditioned point, so finite optimisation "
    "sometimes misses it."
)


@with_threads
def hyperplane_threshold(cfg: ToyConfig, seed: int) -> ToyResult:
    """(a) Success rate of optimisation on random d-planes ``P = θ M + P0`` against ``d``.

    Arrays: ``hyperplane_d`` (D,), ``hyperplane_success_rate`` (D,),
    ``hyperplane_relative_loss`` (D, trials); per variant ``hyperplane_<label>_d``,
    ``..._success_rate``. Claims: ``toy.hyperplane_threshold`` on the main landscape and, if
    ``cfg.variants`` is not empty, ``toy.hyperplane_threshold_robust`` over main + variants.
    """
    result = ToyResult()
    options: _SweepOptions = {
        "trials": cfg.trials,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "tol": cfg.tol,
        "init_scale": cfg.init_scale,
    }
    landscape = main_landscape(cfg, seed)
    main = _hyperplane_sweep(
        landscape, make_generator(seed, "toy", "hyperplane", "main"), **options
    )
    n_thin = landscape.n_thin
    # The control: the same landscape family with isolated minima (no long axes).
    isolated = landscape_of(cfg.main_variant().model_copy(update={"n_long": 0}), cfg, seed)
    control_sweep = _hyperplane_sweep(
        isolated, make_generator(seed, "toy", "hyperplane", "control"), **options
    )
    result.arrays.update(
        {
            "hyperplane_d": main.d,
            "hyperplane_success_rate": main.success_rate,
            "hyperplane_relative_loss": main.relative_loss,
        }
    )

    # Each variant gets its own landscape (same seed) and its own stream of hyperplanes.
    sweeps: dict[str, tuple[ToyVariant, _Sweep]] = {
        cfg.main_variant().label(): (cfg.main_variant(), main)
    }
    isolated_sweeps = [control_sweep]  # per landscape, its isolated-minima (n = 0) control
    for index, variant in enumerate(cfg.variants):
        land = landscape_of(variant, cfg, seed)
        generator = make_generator(seed, "toy", "hyperplane", "variant", index)
        sweep = _hyperplane_sweep(land, generator, **options)
        label = variant.label()
        if label in sweeps:  # the same landscape twice: keep both, apart
            label = f"{label}_{index}"
        sweeps[label] = (variant, sweep)
        isolated_sweeps.append(
            _hyperplane_sweep(
                landscape_of(variant.model_copy(update={"n_long": 0}), cfg, seed),
                make_generator(seed, "toy", "hyperplane", "variant_control", index),
                **options,
            )
        )
        result.arrays[f"hyperplane_{label}_d"] = sweep.d
        result.arrays[f"hyperplane_{label}_success_rate"] = sweep.success_rate

    def rate_at(sweep: _Sweep, d: int) -> float | None:
        return float(sweep.success_rate[d - 1]) if 1 <= d <= len(sweep.d) else None

    setup = (
        f"toy wedges ({landscape.describe()}); d = 1..D, {cfg.trials} random planes per d "
        f"(M ~ N(0, 1/D), P0 ~ N(0, {cfg.init_scale:g}^2 I)); Adam {cfg.steps} steps, "
        f"lr {cfg.lr:g} cosine-decayed; success = final loss < {cfg.tol:g} x loss at P0"
    )
    figure_names = ["toy_hyperplane.png"] if cfg.figures else []
    main_decision = decide_threshold(
        main.successes, cfg.trials, n_thin, control_successes=control_sweep.successes
    )
    result.claims.append(
        Claim(
            id="toy.hyperplane_threshold",
            statement="optimisation on a random d-dim hyperplane succeeds iff d > D − n",
            paper_value="d_lim = D − n",
            paper_setup=PAPER_SETUP,
            measured={
                "d_lim": main.d_lim,
                "D": landscape.dim,
                "n": landscape.n_long,
                "expected_d_lim": n_thin,
                "success_rate_below": rate_at(main, n_thin - 1),
                "success_rate_at": rate_at(main, n_thin),
                "success_rate_above": rate_at(main, n_thin + 1),
                "success_curve": main.success_rate,
                "control_success_curve": control_sweep.success_rate,
            },
            holds=main_decision.holds,
            verdict=main_decision.verdict,
            evidence=main_decision.evidence,
            setup=setup,
            criterion=_THRESHOLD_CRITERION,
            notes=_THRESHOLD_NOTE,
            figures=figure_names,
        )
    )
    if cfg.variants:
        verdicts = {
            label: decide_threshold(
                sweep.successes, cfg.trials, variant.dim - variant.n_long
            ).verdict
            for label, (variant, sweep) in sweeps.items()
        }
        table = [
            {
                "landscape": label,
                "D": variant.dim,
                "n": variant.n_long,
                "rotation": variant.rotation,
                "epsilon": variant.epsilon,
                "widths": variant.widths,
                "d_lim": sweep.d_lim,
                "expected_d_lim": variant.dim - variant.n_long,
                "verdict": verdicts[label],
            }
            for label, (variant, sweep) in sweeps.items()
        ]
        robust = decide_threshold_robust(
            [(sweep.successes, variant.dim - variant.n_long) for variant, sweep in sweeps.values()],
            cfg.trials,
            controls=[control.successes for control in isolated_sweeps],
        )
        result.claims.append(
            Claim(
                id="toy.hyperplane_threshold_robust",
                statement=(
                    "the hyperplane threshold d_lim = D − n does not depend on the wedges' "
                    "alignment, orientation, count (D, n), thickness or widths"
                ),
                paper_value="conclusions independent of alignment, orientation and count",
                paper_setup=PAPER_SETUP,
                measured={"variants": table},
                holds=robust.holds,
                verdict=robust.verdict,
                evidence=robust.evidence,
                setup=f"{setup}; landscapes: {', '.join(sweeps)}",
                criterion="holds if the toy.hyperplane_threshold test holds on every landscape, "
                "fails if it fails on any; inconclusive if the same test also holds on the "
                "landscapes with isolated minima (n = 0)",
                notes=_THRESHOLD_NOTE,
                figures=figure_names,
            )
        )

    if cfg.figures or cfg.interactive:
        offsets = {
            label: (sweep.d - (variant.dim - variant.n_long), sweep.success_rate)
            for label, (variant, sweep) in sweeps.items()
        }
        from lossatlas.plots import toy as toy_plots  # lazy: matplotlib only when drawing

        if cfg.figures:
            from lossatlas.plots import figure_to_png

            fig = toy_plots.plot_hyperplane_threshold(
                main.d, main.success_rate, n_thin=n_thin, d_lim=main.d_lim, variants=offsets
            )
            result.figures["toy_hyperplane.png"] = figure_to_png(fig)
        if cfg.interactive:
            from lossatlas.plots import plotly_to_html

            result.interactive["toy_hyperplane.html"] = plotly_to_html(
                toy_plots.plotly_hyperplane_threshold(offsets)
            )
    return result
