"""A1 (c): from a point on a wedge the loss rises at nearly the same rate along every random
direction. Claim ``toy.radial_probe``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from lossatlas.analysis.statistics import bootstrap_interval, compare, decide
from lossatlas.claims import Claim, Control, Decision
from lossatlas.seeding import make_generator
from lossatlas.studies.wedges.config import ToyConfig
from lossatlas.studies.wedges.toy._common import (
    DTYPE,
    PAPER_SETUP,
    ToyResult,
    adam_descent,
    as_numpy,
    main_landscape,
    with_threads,
)


def _predicted_rates(dim: int, n_long: int) -> tuple[float, float]:
    """Mean and cv of the initial rate along a random unit direction, for ε = 0, equal widths.

    From a point exactly on a wedge, far from the ends of its long coordinates, the loss along
    a unit direction ``v`` is ``t |v_thin|``, and ``|v_thin|² ~ Beta((D − n)/2, n/2)``, so
    ``E|v_thin| = B(a + 1/2, b) / B(a, b)`` and ``E|v_thin|² = a / (a + b)``.
    """
    a, b = (dim - n_long) / 2, n_long / 2
    if b == 0:
        return 1.0, 0.0
    log_mean = math.lgamma(a + 0.5) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(a + b + 0.5)
    mean = math.exp(log_mean)
    var = max(a / (a + b) - mean**2, 0.0)
    return mean, math.sqrt(var) / mean


def _pooled_cv(rates: np.ndarray) -> float:
    flat = np.asarray(rates, dtype=np.float64).ravel()
    mean = float(flat.mean())
    return float(flat.std() / mean) if mean > 0 else math.inf


def decide_radial(
    rates: np.ndarray, axis_rates: np.ndarray, threshold: float, *, seed: int
) -> Decision:
    """``toy.radial_probe``: the pooled coefficient of variation of the random-direction rates
    ``(P, R)``, with a bootstrap interval over the ``P`` points, below ``threshold``.

    The control is the same test on the rates along the wedge's own axes ``(P, D)``: zero along
    the long axes, so far from round.
    """
    found = bootstrap_interval(rates, _pooled_cv, seed=seed)
    axis = bootstrap_interval(axis_rates, _pooled_cv, seed=seed)
    return decide(
        [],
        threshold,
        "below",
        "coefficient of variation of the loss's initial rate of rise over random directions, "
        "pooled over points",
        interval=found,
        control=Control(
            "the same test along the wedge's own axes",
            axis.estimate,
            compare(axis, threshold, "below"),
            {"ci95": axis.bounds},
        ),
    )


@with_threads
def radial_probe(cfg: ToyConfig, seed: int) -> ToyResult:
    """(c) Initial rate of loss rise from a point on a wedge, along random and axis directions.

    ``P = cfg.radial_points`` random starts are descended onto wedges; from each,
    ``R = cfg.directions`` random unit directions ``v`` (and, for comparison, the ``D`` unit
    axes ``Q e_i`` of the wedge frame) are probed at steps ``t ∈ probe_steps``. The rate is the
    least-squares slope through the origin of ``loss(P + t v) − loss(P)`` against ``t``.
    A round hole would give one rate for all directions (cv 0); the axis probe gives 0 along the
    ``n`` long axes and ``1 / w_i`` along the thin ones.

    Arrays: ``radial_rates`` (P, R), ``radial_axis_rates`` (P, D), ``radial_base_loss`` (P,),
    ``radial_point_cv`` (P,).
    """
    landscape = main_landscape(cfg, seed)
    generator = make_generator(seed, "toy", "radial")
    scale = cfg.init_scale
    starts = landscape.sample_init(cfg.radial_points, generator, scale)
    points = adam_descent(landscape.loss, starts, steps=cfg.steps, lr=cfg.lr * scale)
    directions = torch.randn(
        cfg.radial_points, cfg.directions, landscape.dim, generator=generator, dtype=DTYPE
    )
    directions = directions / directions.norm(dim=-1, keepdim=True)
    frame_axes = (
        landscape.rotation_matrix.T  # rows Q e_i
        if landscape.rotation_matrix is not None
        else torch.eye(landscape.dim, dtype=DTYPE)
    )
    t = torch.tensor(cfg.probe_steps, dtype=DTYPE) * scale  # (S,)

    def rates(dirs: Tensor) -> Tensor:  # (P, K, D) -> (P, K)
        probes = points[:, None, None, :] + t[None, None, :, None] * dirs[:, :, None, :]
        rise = landscape.loss(probes) - base[:, None, None]
        return (rise * t).sum(-1) / t.square().sum()

    with torch.no_grad():
        base = landscape.loss(points)
        random_rates = rates(directions)
        axis_rates = rates(frame_axes[None].expand(cfg.radial_points, -1, -1))
    flat = as_numpy(random_rates).ravel()
    mean, std = float(flat.mean()), float(flat.std())
    cv = std / mean if mean > 0 else math.inf
    per_point_cv = as_numpy(random_rates.std(-1, correction=0) / random_rates.mean(-1))
    axis_flat = as_numpy(axis_rates).ravel()
    axis_cv = float(axis_flat.std() / axis_flat.mean())
    decision = decide_radial(
        as_numpy(random_rates), as_numpy(axis_rates), cfg.cv_threshold, seed=seed
    )
    predicted: dict[str, float] = {}
    if landscape.epsilon == 0 and landscape.width_kind == "equal":
        p_mean, p_cv = _predicted_rates(landscape.dim, landscape.n_long)
        predicted = {"predicted_mean": p_mean, "predicted_cv": p_cv}

    result = ToyResult()
    result.arrays.update(
        {
            "radial_rates": as_numpy(random_rates),
            "radial_axis_rates": as_numpy(axis_rates),
            "radial_base_loss": as_numpy(base),
            "radial_point_cv": per_point_cv,
        }
    )
    figure_names = ["toy_radial.png"] if cfg.figures else []
    result.claims.append(
        Claim(
            id="toy.radial_probe",
            statement=(
                "from a point on a wedge the loss rises at almost the same rate along every "
                "random direction, so locally the wedge looks like a round hole/tunnel"
            ),
            paper_value="nearly equal rates along random directions",
            paper_setup=PAPER_SETUP,
            measured={
                "rate_mean": mean,
                "rate_std": std,
                "rate_cv": cv,
                "rate_min": float(flat.min()),
                "rate_max": float(flat.max()),
                "per_point_cv": per_point_cv,
                "axis_rate_cv": axis_cv,
                "round_hole_cv": 0.0,
                "max_base_loss": float(base.max()),
                **predicted,
            },
            holds=decision.holds,
            verdict=decision.verdict,
            evidence=decision.evidence,
            setup=(
                f"toy wedges ({landscape.describe()}); {cfg.radial_points} points descended "
                f"onto wedges (Adam {cfg.steps} steps), {cfg.directions} random unit directions "
                f"each, rate = LS slope of the loss rise over t ∈ "
                f"{[round(float(x), 6) for x in t]}"
            ),
            criterion=(
                "holds if the 95% bootstrap interval (over the probed points) of the coefficient "
                "of variation (std / mean, pooled over points and directions) of the "
                f"random-direction rates lies below {cfg.cv_threshold:g}"
            ),
            notes=(
                "A round hole gives cv 0; probing along the wedge's own axes gives rate 0 along "
                "the n long axes, hence axis_rate_cv ≈ sqrt(n / (D − n)) for equal widths. The "
                "random-direction rate is |v_thin| (the norm of v's thin part), which "
                "concentrates as D grows (predicted_* for ε = 0, equal widths)."
            ),
            figures=figure_names,
        )
    )
    if cfg.figures:
        from lossatlas.plots import figure_to_png
        from lossatlas.plots import toy as toy_plots

        result.figures["toy_radial.png"] = figure_to_png(
            toy_plots.plot_radial_rates(
                flat, axis_flat, predicted_mean=predicted.get("predicted_mean")
            )
        )
    return result
