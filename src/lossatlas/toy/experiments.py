"""The three toy-model experiments of the wedge paper (PAPERS.md A1 a-c), each with a claim.

* :func:`hyperplane_threshold` (a): optimise only ``θ ∈ R^d`` in ``P = θ M + P0``; success
  needs ``d`` at least ``D - n`` (the claim ``toy.hyperplane_threshold``, plus
  ``toy.hyperplane_threshold_robust`` over rotated / thick / random-width / other ``(D, n)``
  variants).
* :func:`tunnel` (b): optimise split points of the straight segment between two optima inside
  the hyperplanes normal to it (PAPERS.md A3), on the toy (``toy.tunnel``).
* :func:`radial_probe` (c): from a point on a wedge, the loss rises at nearly the same rate
  along every random direction (``toy.radial_probe``).

:func:`run_toy` runs all three. Everything is vectorised over trials (one batched tensor per
experiment), runs in float64 on the CPU, and draws every random number from
``make_generator(seed, "toy", <experiment>, ...)``, so the same ``(config, seed)`` gives the
same numbers.

Optimisers (chosen for the toy, where the loss is a distance: its gradient has norm ~1
everywhere off the wedges, so a fixed step would rattle around the minimum forever):

* plain descent (hyperplane coordinates, tunnel endpoints, probe points): Adam, learning rate
  ``lr * init_scale`` cosine-decayed to 0 over ``steps``. Adam rescales each coordinate, which
  copes with the badly conditioned random bases ``M`` at ``d = D - n``.
* tunnel split points: plain gradient descent with the gradient projected onto the hyperplane
  normal to ``u`` and the same cosine decay. Adam is *not* used there: its per-coordinate
  rescaling would turn a projected gradient into a step with a component along ``u``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from lossatlas.config import StrictModel
from lossatlas.seeding import make_generator
from lossatlas.studies.claims import Claim
from lossatlas.toy.wedges import WedgeLandscape

__all__ = [
    "ToyConfig",
    "ToyResult",
    "ToyVariant",
    "hyperplane_threshold",
    "radial_probe",
    "run_toy",
    "tunnel",
]

PAPER_SETUP = "toy n-wedge model (paper §3)"
_DTYPE = torch.float64


# --------------------------------------------------------------------------- configuration


class ToyVariant(StrictModel):
    """One extra landscape on which the hyperplane threshold is re-measured."""

    dim: int = Field(gt=1)
    n_long: int = Field(ge=0)
    epsilon: float = Field(0.0, ge=0.0)
    rotation: bool = False
    widths: Literal["equal", "random"] = "equal"

    @model_validator(mode="after")
    def _check_n(self) -> ToyVariant:
        if self.n_long >= self.dim:
            raise ValueError(f"n_long ({self.n_long}) must be < dim ({self.dim})")
        return self

    def label(self) -> str:
        """Short name such as ``"D10_n3_rot"``, used in array keys and legends."""
        parts = [f"D{self.dim}", f"n{self.n_long}"]
        if self.rotation:
            parts.append("rot")
        if self.epsilon > 0:
            parts.append(f"eps{self.epsilon:g}")
        if self.widths == "random":
            parts.append("rw")
        return "_".join(parts)


def _default_variants() -> list[ToyVariant]:
    # Orientation (rotated), thickness + per-wedge widths, and wedge count (other D, n): the
    # paper says the conclusions do not depend on alignment, orientation or count.
    return [
        ToyVariant(dim=20, n_long=5, rotation=True),
        ToyVariant(dim=20, n_long=5, rotation=True, epsilon=0.02, widths="random"),
        ToyVariant(dim=10, n_long=3, rotation=True),
        ToyVariant(dim=12, n_long=6, rotation=True),
        ToyVariant(dim=8, n_long=2),
    ]


class ToyConfig(StrictModel):
    """Options of the toy-model experiments (:func:`run_toy`).

    Lengths (``epsilon``, ``probe_steps``) and learning rates are in units of ``init_scale``,
    the per-coordinate standard deviation of random starting points. The defaults run in a few
    seconds on two CPU cores; :meth:`smoke` in about one.
    """

    # The landscape.
    dim: int = Field(20, gt=1, description="D, the dimension of the space")
    n_long: int = Field(5, ge=0, description="n, long axes per wedge (C(D, n) wedges)")
    epsilon: float = Field(0.0, ge=0.0, description="wedge thickness ε (units of init_scale)")
    rotation: bool = Field(False, description="rotate the wedges by a seeded random Q")
    widths: Literal["equal", "random"] = Field("equal", description="per-axis wedge widths")
    width_spread: float = Field(2.0, ge=1.0, description="random widths in [1/s, s]")
    init_scale: float = Field(1.0, gt=0.0, description="std of random points per coordinate")

    # Shared descent (Adam, cosine-decayed): hyperplanes, tunnel endpoints, probe points.
    steps: int = Field(800, gt=0, description="Adam steps")
    lr: float = Field(0.2, gt=0.0, description="initial Adam learning rate (x init_scale)")

    # (a) random hyperplanes.
    trials: int = Field(12, gt=0, description="random hyperplanes per dimension d")
    tol: float = Field(
        1e-3, gt=0.0, lt=1.0, description="success: final loss < tol x loss at P0 (relative)"
    )
    variants: list[ToyVariant] = Field(
        default_factory=_default_variants,
        description="extra landscapes for the threshold's robustness (empty: skip)",
    )

    # (b) tunnel.
    tunnel_trials: int = Field(4, gt=0, description="pairs of optima, tunnelled in one batch")
    split_points: int = Field(9, gt=0, description="k interior points of the segment")
    tunnel_steps: int = Field(400, gt=0, description="projected gradient-descent steps")
    tunnel_lr: float = Field(0.5, gt=0.0, description="initial GD step (x init_scale)")
    path_resolution: int = Field(32, gt=1, description="loss samples per path segment")
    barrier_fraction: float = Field(
        0.1, gt=0.0, description="tunnel holds if its barrier < this x the straight barrier"
    )
    slice_resolution: int = Field(81, gt=2, description="grid size of the 2-D slice picture")

    # (c) radial probe.
    radial_points: int = Field(4, gt=0, description="points on wedges to probe from")
    directions: int = Field(256, gt=1, description="random unit directions per point")
    probe_steps: list[float] = Field(
        default_factory=lambda: [0.01, 0.02, 0.05],
        min_length=1,
        description="step lengths t (x init_scale) for the rate fit loss(t) ≈ rate x t",
    )
    cv_threshold: float = Field(0.25, gt=0.0, description="radial holds if rate cv < this")

    # Execution and output.
    torch_threads: int = Field(
        1, ge=0, description="torch intra-op threads while the toy runs (0: leave as is)"
    )
    figures: bool = Field(True, description="render PNG figures")
    interactive: bool = Field(True, description="render plotly HTML fragments")

    @model_validator(mode="after")
    def _check_n(self) -> ToyConfig:
        if self.n_long >= self.dim:
            raise ValueError(f"n_long ({self.n_long}) must be < dim ({self.dim})")
        if any(t <= 0 for t in self.probe_steps):
            raise ValueError("probe_steps must be positive")
        return self

    @classmethod
    def smoke(cls, **overrides: Any) -> ToyConfig:
        """A tiny configuration for tests and smoke runs (about a second)."""
        options: dict[str, Any] = {
            "dim": 8,
            "n_long": 2,
            "steps": 200,
            "trials": 4,
            "variants": [ToyVariant(dim=8, n_long=2, rotation=True)],
            "tunnel_trials": 2,
            "tunnel_steps": 150,
            "path_resolution": 16,
            "slice_resolution": 41,
            "radial_points": 2,
            "directions": 64,
            "interactive": False,
        }
        options.update(overrides)
        return cls(**options)

    def landscape(self, seed: int) -> WedgeLandscape:
        """The main landscape of this configuration."""
        return WedgeLandscape(
            self.dim,
            self.n_long,
            epsilon=self.epsilon * self.init_scale,
            rotation=self.rotation,
            widths=self.widths,
            seed=seed,
            width_spread=self.width_spread,
            dtype=_DTYPE,
        )

    def main_variant(self) -> ToyVariant:
        """The main landscape as a :class:`ToyVariant`."""
        return ToyVariant(
            dim=self.dim,
            n_long=self.n_long,
            epsilon=self.epsilon,
            rotation=self.rotation,
            widths=self.widths,
        )


@dataclass
class ToyResult:
    """What a toy experiment returns.

    Attributes:
        arrays: named numpy arrays (shapes in each experiment's docstring).
        claims: the :class:`~lossatlas.studies.claims.Claim` records.
        figures: file name -> PNG bytes (e.g. ``"toy_hyperplane.png"``).
        interactive: file name -> plotly HTML fragment bytes (without plotly.js).
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)
    interactive: dict[str, bytes] = field(default_factory=dict)

    def update(self, other: ToyResult) -> None:
        """Merge ``other`` into this result (later names win)."""
        self.arrays.update(other.arrays)
        self.claims.extend(other.claims)
        self.figures.update(other.figures)
        self.interactive.update(other.interactive)

    def claim(self, claim_id: str) -> Claim:
        """The claim with id ``claim_id`` (``KeyError`` if absent)."""
        for record in self.claims:
            if record.id == claim_id:
                return record
        raise KeyError(claim_id)


# --------------------------------------------------------------------------- optimisers


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads (0: unchanged), restoring the setting afterwards.

    Toy tensors are tiny (at most a few hundred 20 x 20 matrices), so threading each op costs
    more than it saves; on a busy 2-core machine it measured ~15x slower than one thread.
    """
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _with_threads(
    experiment: Callable[[ToyConfig, int], ToyResult],
) -> Callable[[ToyConfig, int], ToyResult]:
    """Run an experiment ``(cfg, seed)`` under ``cfg.torch_threads`` intra-op threads."""

    @functools.wraps(experiment)
    def wrapper(cfg: ToyConfig, seed: int) -> ToyResult:
        with _torch_threads(cfg.torch_threads):
            return experiment(cfg, seed)

    return wrapper


def _cosine(lr: float, step: int, steps: int) -> float:
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))


def _adam_descent(
    objective: Callable[[Tensor], Tensor], start: Tensor, *, steps: int, lr: float
) -> Tensor:
    """Minimise a batched objective (B, k) -> (B,) row by row; returns the final (B, k).

    One Adam instance on the whole (B, k) tensor is B independent Adams: the gradient of the
    summed objective splits into per-row gradients and Adam's update is elementwise.
    Coordinates with an identically zero gradient (masked hyperplane directions) never move.
    """
    x = start.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=lr)
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = _cosine(lr, step, steps)
        (grad,) = torch.autograd.grad(objective(x).sum(), x)
        x.grad = grad
        optimiser.step()
    return x.detach()


def _projected_descent(
    objective: Callable[[Tensor], Tensor], start: Tensor, normal: Tensor, *, steps: int, lr: float
) -> Tensor:
    """Gradient descent on (T, k, D) points, each confined to the hyperplane normal to ``u``.

    ``normal`` is (T, D) unit vectors; ``g <- g - (g·u) u`` before every step, so the points
    never move along ``u`` (up to rounding).
    """
    x = start.detach().clone()
    u = normal[:, None, :]
    for step in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x).sum(), x)
        grad = grad - (grad * u).sum(-1, keepdim=True) * u
        x = (x - _cosine(lr, step, steps) * grad).detach()
    return x


def _np(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


# --------------------------------------------------------------------------- (a) hyperplanes


@dataclass
class _Sweep:
    d: np.ndarray  # (D,) hyperplane dimensions 1..D
    success_rate: np.ndarray  # (D,)
    relative_loss: np.ndarray  # (D, trials) final loss / loss at P0
    d_lim: int  # smallest d with success rate >= 0.5 (-1 if none)


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
    basis = torch.randn(count, dim, dim, generator=generator, dtype=_DTYPE) / math.sqrt(dim)
    row_mask = (torch.arange(dim)[None, :] < d_of[:, None]).to(_DTYPE)  # (B, D): rows < d
    basis = basis * row_mask[:, :, None]
    origin = landscape.sample_init(count, generator, init_scale)  # P0 (B, D)

    def plane_loss(theta: Tensor) -> Tensor:
        return landscape.loss(torch.bmm(theta[:, None, :], basis)[:, 0] + origin)

    theta = _adam_descent(
        plane_loss, torch.zeros(count, dim, dtype=_DTYPE), steps=steps, lr=lr * init_scale
    )
    with torch.no_grad():
        relative = plane_loss(theta) / landscape.loss(origin)
    relative = relative.view(dim, trials)
    rate = (relative < tol).to(_DTYPE).mean(1)
    reached = torch.nonzero(rate >= 0.5)
    d_lim = int(reached[0, 0]) + 1 if len(reached) else -1
    return _Sweep(
        d=np.arange(1, dim + 1), success_rate=_np(rate), relative_loss=_np(relative), d_lim=d_lim
    )


def _threshold_holds(d_lim: int, n_thin: int) -> bool:
    return n_thin <= d_lim <= n_thin + 1


_THRESHOLD_CRITERION = (
    "d_lim = smallest d whose success rate is >= 0.5 (success: final loss < tol x loss at P0); "
    "holds iff D - n <= d_lim <= D - n + 1, i.e. the threshold sits at D - n up to the "
    "one-step ambiguity of whether d = D - n itself counts"
)
_THRESHOLD_NOTE = (
    "Counting equations: with eps = 0 a d-plane meets one n-dim wedge when d + n >= D "
    "(D - n equations, d unknowns), and at d = D - n every local minimum on the plane is a zero, "
    "so geometry puts the first successful d at D - n (success iff d >= D - n). The paper's "
    "wording 'succeeds when d > D - n' is one step stricter; the criterion accepts both. At "
    "d = D - n the zero is a single, often badly conditioned point, so finite optimisation "
    "sometimes misses it."
)


@_with_threads
def hyperplane_threshold(cfg: ToyConfig, seed: int) -> ToyResult:
    """(a) Success rate of optimisation on random d-planes ``P = θ M + P0`` against ``d``.

    Arrays: ``hyperplane_d`` (D,), ``hyperplane_success_rate`` (D,),
    ``hyperplane_relative_loss`` (D, trials); per variant ``hyperplane_<label>_d``,
    ``..._success_rate``. Claims: ``toy.hyperplane_threshold`` on the main landscape and, if
    ``cfg.variants`` is not empty, ``toy.hyperplane_threshold_robust`` over main + variants.
    """
    result = ToyResult()
    options = {
        "trials": cfg.trials,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "tol": cfg.tol,
        "init_scale": cfg.init_scale,
    }
    landscape = cfg.landscape(seed)
    main = _hyperplane_sweep(
        landscape, make_generator(seed, "toy", "hyperplane", "main"), **options
    )
    n_thin = landscape.n_thin
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
    for index, variant in enumerate(cfg.variants):
        land = WedgeLandscape(
            variant.dim,
            variant.n_long,
            epsilon=variant.epsilon * cfg.init_scale,
            rotation=variant.rotation,
            widths=variant.widths,
            seed=seed,
            width_spread=cfg.width_spread,
            dtype=_DTYPE,
        )
        generator = make_generator(seed, "toy", "hyperplane", "variant", index)
        sweep = _hyperplane_sweep(land, generator, **options)
        label = variant.label()
        if label in sweeps:  # the same landscape twice: keep both, apart
            label = f"{label}_{index}"
        sweeps[label] = (variant, sweep)
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
            },
            holds=_threshold_holds(main.d_lim, n_thin),
            setup=setup,
            criterion=_THRESHOLD_CRITERION,
            notes=_THRESHOLD_NOTE,
            figures=figure_names,
        )
    )
    if cfg.variants:
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
                "holds": _threshold_holds(sweep.d_lim, variant.dim - variant.n_long),
            }
            for label, (variant, sweep) in sweeps.items()
        ]
        result.claims.append(
            Claim(
                id="toy.hyperplane_threshold_robust",
                statement=(
                    "the hyperplane threshold d_lim = D − n does not depend on the wedges' "
                    "alignment, orientation, count (D, n), thickness or widths"
                ),
                paper_value="conclusions independent of alignment, orientation and count",
                paper_setup=PAPER_SETUP,
                measured={
                    "variants": table,
                    "all_hold": all(row["holds"] for row in table),
                },
                holds=all(row["holds"] for row in table),
                setup=f"{setup}; landscapes: {', '.join(sweeps)}",
                criterion="the toy.hyperplane_threshold criterion holds on every landscape",
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


# --------------------------------------------------------------------------- (b) tunnel


def _distinct_starts(
    landscape: WedgeLandscape, pairs: int, generator: torch.Generator, scale: float
) -> Tensor:
    """(pairs, 2, D) random starts whose two members lie nearest to different wedges.

    Full-space descent on a distance moves straight to the nearest wedge, so different nearest
    wedges at the start give optima on different wedges. A pair that shares its nearest wedge
    is redrawn (rare: probability 1 / C(D, n) for equal widths).
    """
    if landscape.wedge_count < 2:
        raise ValueError("a tunnel needs at least two wedges (0 < n_long < dim)")
    starts = landscape.sample_init(2 * pairs, generator, scale).view(pairs, 2, -1)
    for _ in range(1000):
        wedges = landscape.nearest_wedge(starts)
        same = (wedges[:, 0] == wedges[:, 1]).all(-1)
        if not bool(same.any()):
            return starts
        fresh = landscape.sample_init(2 * int(same.sum()), generator, scale)
        starts[same] = fresh.view(-1, 2, landscape.dim)
    raise RuntimeError("could not draw two starts nearest to different wedges")


def _block_means(cos: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cosine within and across the two halves, per trial: (T, k, k) -> (T,), (T,).

    First block: split points with ``t < 1/2``; second: ``t > 1/2``; a point at exactly
    ``t = 1/2`` (odd ``k``) belongs to neither. Within-block pairs exclude the diagonal.
    """
    first = positions < 0.5
    second = positions > 0.5
    same = (first[:, None] & first[None, :]) | (second[:, None] & second[None, :])
    same = same & ~torch.eye(len(positions), dtype=torch.bool)
    across = first[:, None] & second[None, :]
    nan = torch.full(cos.shape[:1], math.nan, dtype=cos.dtype)
    within_mean = cos[:, same].mean(-1) if bool(same.any()) else nan
    across_mean = cos[:, across].mean(-1) if bool(across.any()) else nan
    return within_mean, across_mean


@_with_threads
def tunnel(cfg: ToyConfig, seed: int) -> ToyResult:
    """(b) Low-loss tunnels between optima on different wedges (PAPERS.md A3 on the toy).

    For each of ``T = cfg.tunnel_trials`` pairs: descend two random starts to optima
    ``θ1, θ2`` on different wedges; split the segment at ``t_j = j / (k + 1)``, ``j = 1..k``;
    move each split point by projected gradient descent inside the hyperplane normal to
    ``u = (θ2 − θ1)/|θ2 − θ1|``; join the points by straight segments.

    Because every deviation is normal to ``u``, split point ``j`` stays at position ``t_j``
    along the segment, so the straight and tunnel paths share one position axis.

    Arrays: ``tunnel_position`` (S,), ``tunnel_straight_loss`` (T, S), ``tunnel_path_loss``
    (T, S) with ``S = (k + 1) * path_resolution + 1``; ``tunnel_split_position`` (k,),
    ``tunnel_split_loss`` (T, k), ``tunnel_deviation`` (T, k, D), ``tunnel_deviation_dot_u``
    (T, k), ``tunnel_cosine`` (T, k, k), ``tunnel_endpoints`` (T, 2, D),
    ``tunnel_endpoint_wedges`` (T, 2, n), ``tunnel_straight_barrier`` / ``tunnel_path_barrier``
    (T,); the slice picture: ``tunnel_slice_a`` (G,), ``tunnel_slice_b`` (G,),
    ``tunnel_slice_loss`` (G, G), ``tunnel_slice_endpoints`` (2, 2), ``tunnel_slice_path``
    (k + 2, 2).
    """
    landscape = cfg.landscape(seed)
    generator = make_generator(seed, "toy", "tunnel")
    pairs, k, dim = cfg.tunnel_trials, cfg.split_points, landscape.dim
    scale = cfg.init_scale

    starts = _distinct_starts(landscape, pairs, generator, scale)
    ends = _adam_descent(
        landscape.loss, starts.view(2 * pairs, dim), steps=cfg.steps, lr=cfg.lr * scale
    ).view(pairs, 2, dim)
    wedges = landscape.nearest_wedge(ends)  # (T, 2, n)
    different = ~(wedges[:, 0] == wedges[:, 1]).all(-1)  # (T,)
    theta1, theta2 = ends[:, 0], ends[:, 1]
    delta = theta2 - theta1
    u = delta / delta.norm(dim=-1, keepdim=True)

    split_t = torch.arange(1, k + 1, dtype=_DTYPE) / (k + 1)  # (k,)
    line = theta1[:, None, :] + split_t[None, :, None] * delta[:, None, :]  # (T, k, D)
    points = _projected_descent(
        landscape.loss, line, u, steps=cfg.tunnel_steps, lr=cfg.tunnel_lr * scale
    )
    deviation = points - line
    dev_dot_u = (deviation * u[:, None, :]).sum(-1)  # (T, k), ≈ 0 by construction
    unit_dev = deviation / deviation.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    cosine = unit_dev @ unit_dev.transpose(1, 2)  # (T, k, k)
    within, across = _block_means(cosine, split_t)

    # Dense sampling: path_resolution samples per segment, then the final endpoint.
    res = cfg.path_resolution
    path = torch.cat([theta1[:, None], points, theta2[:, None]], dim=1)  # (T, k + 2, D)
    frac = torch.arange(res, dtype=_DTYPE) / res
    segments = (
        path[:, :-1, None, :]
        + frac[None, None, :, None] * (path[:, 1:] - path[:, :-1])[:, :, None, :]
    )
    dense = torch.cat([segments.reshape(pairs, -1, dim), theta2[:, None]], dim=1)  # (T, S, D)
    position = torch.linspace(0.0, 1.0, dense.shape[1], dtype=_DTYPE)
    straight = theta1[:, None, :] + position[None, :, None] * delta[:, None, :]
    with torch.no_grad():
        end_loss = landscape.loss(ends).amax(-1)  # (T,)
        straight_loss = landscape.loss(straight)
        path_loss = landscape.loss(dense)
        split_loss = landscape.loss(points)
    straight_barrier = straight_loss.amax(-1) - end_loss
    path_barrier = path_loss.amax(-1) - end_loss
    ratio = path_barrier / straight_barrier

    # A 2-D cut through the origin spanned by the first pair's optima (PAPERS.md A2 style).
    e1 = theta1[0] / theta1[0].norm()
    e2 = theta2[0] - (theta2[0] @ e1) * e1
    e2 = e2 / e2.norm()
    reach = 1.3 * float(torch.maximum(theta1[0].norm(), theta2[0].norm()))
    grid = torch.linspace(-reach, reach, cfg.slice_resolution, dtype=_DTYPE)
    plane = grid[None, :, None] * e1 + grid[:, None, None] * e2  # (G_b, G_a, D): rows = b
    with torch.no_grad():
        slice_loss = landscape.loss(plane)
    basis = torch.stack([e1, e2], dim=1)  # (D, 2)

    result = ToyResult()
    result.arrays.update(
        {
            "tunnel_position": _np(position),
            "tunnel_straight_loss": _np(straight_loss),
            "tunnel_path_loss": _np(path_loss),
            "tunnel_split_position": _np(split_t),
            "tunnel_split_loss": _np(split_loss),
            "tunnel_deviation": _np(deviation),
            "tunnel_deviation_dot_u": _np(dev_dot_u),
            "tunnel_cosine": _np(cosine),
            "tunnel_endpoints": _np(ends),
            "tunnel_endpoint_wedges": _np(wedges),
            "tunnel_straight_barrier": _np(straight_barrier),
            "tunnel_path_barrier": _np(path_barrier),
            "tunnel_slice_a": _np(grid),
            "tunnel_slice_b": _np(grid),
            "tunnel_slice_loss": _np(slice_loss),
            "tunnel_slice_endpoints": _np(ends[0] @ basis),
            "tunnel_slice_path": _np(path[0] @ basis),
        }
    )

    mean_ratio = float(ratio.mean())
    within_mean = float(within.nanmean())
    across_mean = float(across.nanmean())
    holds = (
        bool(different.all()) and mean_ratio < cfg.barrier_fraction and within_mean > across_mean
    )
    figure_names = (
        ["toy_tunnel_loss.png", "toy_tunnel_cosine.png", "toy_slice.png"] if cfg.figures else []
    )
    result.claims.append(
        Claim(
            id="toy.tunnel",
            statement=(
                "optimising split points of the straight segment between two optima inside the "
                "hyperplanes normal to it gives a low-loss tunnel, whose deviations form two "
                "blocks (first half / second half)"
            ),
            paper_value="low-loss tunnel; deviation cosine ≈ 0.6–1 within a block, ≈ 0 across",
            paper_setup=PAPER_SETUP,
            measured={
                "barrier_straight": float(straight_barrier.mean()),
                "max_loss_tunnel": float(path_loss.amax(-1).mean()),
                "barrier_tunnel": float(path_barrier.mean()),
                "barrier_ratio": mean_ratio,
                "barrier_ratio_per_trial": _np(ratio),
                "max_loss_split_points": float(split_loss.max()),
                "within_block_cos": within_mean,
                "across_block_cos": across_mean,
                "max_abs_deviation_dot_u": float(dev_dot_u.abs().max()),
                "endpoints_on_different_wedges": bool(different.all()),
                "cos_matrix": _np(cosine.mean(0)),
            },
            holds=holds,
            setup=(
                f"toy wedges ({landscape.describe()}); {pairs} pairs of optima (Adam "
                f"{cfg.steps} steps from N(0, {scale:g}^2 I) starts), k = {k} split points, "
                f"projected GD {cfg.tunnel_steps} steps (lr {cfg.tunnel_lr:g} cosine-decayed), "
                f"{res} loss samples per segment; values are means over pairs, cos_matrix the "
                "mean over pairs"
            ),
            criterion=(
                "endpoints on different wedges, mean over pairs of (tunnel barrier / straight "
                f"barrier) < {cfg.barrier_fraction:g} on the densely sampled path, and mean "
                "within-block cosine > mean across-block cosine (blocks t < 1/2 and t > 1/2); "
                "barrier = max loss on the path − max endpoint loss"
            ),
            notes=(
                "max_loss_split_points is the loss at the optimised split points alone; the "
                "dense path also samples the straight segments joining them, which is where a "
                "toy tunnel keeps loss: consecutive points can sit on different wedges, and the "
                "segment between two wedges leaves both. Across-block cosines also stay "
                "large in the toy: a first-half point must remove the coordinates of θ2's "
                "wedge, and staying normal to u forces it to shrink θ1's as well; second-half "
                "points do the mirror image, so both blocks lean towards −(θ1 + θ2)."
            ),
            figures=figure_names,
        )
    )

    if cfg.figures:
        from lossatlas.plots import figure_to_png
        from lossatlas.plots import toy as toy_plots

        result.figures["toy_tunnel_loss.png"] = figure_to_png(
            toy_plots.plot_tunnel_loss(
                _np(position),
                _np(straight_loss),
                _np(path_loss),
                split_position=_np(split_t),
                split_loss=_np(split_loss),
            )
        )
        result.figures["toy_tunnel_cosine.png"] = figure_to_png(
            toy_plots.plot_cosine_matrix(
                _np(cosine.mean(0)),
                title=f"Deviation cosines (mean over {pairs} pairs)",
            )
        )
        result.figures["toy_slice.png"] = figure_to_png(
            toy_plots.plot_wedge_slice(
                _np(grid),
                _np(grid),
                _np(slice_loss),
                endpoints=_np(ends[0] @ basis),
                path=_np(path[0] @ basis),
            )
        )
    return result


# --------------------------------------------------------------------------- (c) radial probe


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


@_with_threads
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
    landscape = cfg.landscape(seed)
    generator = make_generator(seed, "toy", "radial")
    scale = cfg.init_scale
    starts = landscape.sample_init(cfg.radial_points, generator, scale)
    points = _adam_descent(landscape.loss, starts, steps=cfg.steps, lr=cfg.lr * scale)
    directions = torch.randn(
        cfg.radial_points, cfg.directions, landscape.dim, generator=generator, dtype=_DTYPE
    )
    directions = directions / directions.norm(dim=-1, keepdim=True)
    frame_axes = (
        landscape.rotation_matrix.T  # rows Q e_i
        if landscape.rotation_matrix is not None
        else torch.eye(landscape.dim, dtype=_DTYPE)
    )
    t = torch.tensor(cfg.probe_steps, dtype=_DTYPE) * scale  # (S,)

    def rates(dirs: Tensor) -> Tensor:  # (P, K, D) -> (P, K)
        probes = points[:, None, None, :] + t[None, None, :, None] * dirs[:, :, None, :]
        rise = landscape.loss(probes) - base[:, None, None]
        return (rise * t).sum(-1) / t.square().sum()

    with torch.no_grad():
        base = landscape.loss(points)
        random_rates = rates(directions)
        axis_rates = rates(frame_axes[None].expand(cfg.radial_points, -1, -1))
    flat = _np(random_rates).ravel()
    mean, std = float(flat.mean()), float(flat.std())
    cv = std / mean if mean > 0 else math.inf
    per_point_cv = _np(random_rates.std(-1, correction=0) / random_rates.mean(-1))
    axis_flat = _np(axis_rates).ravel()
    axis_cv = float(axis_flat.std() / axis_flat.mean())
    predicted: dict[str, float] = {}
    if landscape.epsilon == 0 and landscape.width_kind == "equal":
        p_mean, p_cv = _predicted_rates(landscape.dim, landscape.n_long)
        predicted = {"predicted_mean": p_mean, "predicted_cv": p_cv}

    result = ToyResult()
    result.arrays.update(
        {
            "radial_rates": _np(random_rates),
            "radial_axis_rates": _np(axis_rates),
            "radial_base_loss": _np(base),
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
            holds=bool(cv < cfg.cv_threshold),
            setup=(
                f"toy wedges ({landscape.describe()}); {cfg.radial_points} points descended "
                f"onto wedges (Adam {cfg.steps} steps), {cfg.directions} random unit directions "
                f"each, rate = LS slope of the loss rise over t ∈ "
                f"{[round(float(x), 6) for x in t]}"
            ),
            criterion=(
                f"coefficient of variation (std / mean, pooled over points and directions) of "
                f"the random-direction rates < {cfg.cv_threshold:g}"
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


# --------------------------------------------------------------------------- all three


def run_toy(cfg: ToyConfig | None = None, seed: int = 0) -> ToyResult:
    """Run the three toy experiments (a-c) and merge their arrays, claims and figures.

    Claims: ``toy.hyperplane_threshold``, ``toy.hyperplane_threshold_robust`` (if
    ``cfg.variants``), ``toy.tunnel``, ``toy.radial_probe``.
    """
    cfg = cfg or ToyConfig()
    result = hyperplane_threshold(cfg, seed)
    result.update(tunnel(cfg, seed))
    result.update(radial_probe(cfg, seed))
    return result
