"""Options of the wedge study (Fort & Jastrzebski 2019, PAPERS.md part A), one class each.

Every option and default of the study is owned here; the experiment modules read them. The
instruments' own options (tunnels and connectors, tunnel width, curvature counts) are owned by
the instruments and only given study defaults here.
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lossatlas.config import CountOptions, ScheduleConfig, StrictModel, WidthOptions
from lossatlas.probes.paths import ConnectorOptions

__all__ = [
    "ConnectOptions",
    "CutsOptions",
    "EnsembleConfig",
    "SweepOptions",
    "ToyConfig",
    "ToyVariant",
    "WedgesConfig",
]


# --------------------------------------------------------------------------- A1 toy


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
    seconds on two CPU cores.
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
    tunnel_trials: int = Field(
        4, gt=1, description="pairs of optima, tunnelled in one batch (the replicates)"
    )
    split_points: int = Field(9, gt=0, description="k interior points of the segment")
    tunnel_steps: int = Field(400, gt=0, description="projected gradient-descent steps")
    tunnel_lr: float = Field(0.5, gt=0.0, description="initial GD step (x init_scale)")
    path_resolution: int = Field(32, gt=1, description="loss samples per path segment")
    barrier_fraction: float = Field(
        0.1, gt=0.0, description="tunnel holds if its barrier < this x the straight barrier"
    )
    slice_resolution: int = Field(81, gt=2, description="grid size of the 2-D slice picture")

    # (c) radial probe.
    radial_points: int = Field(
        8, gt=1, description="points on wedges to probe from (the replicates of the bootstrap)"
    )
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

    def main_variant(self) -> ToyVariant:
        """The main landscape as a :class:`ToyVariant`."""
        return ToyVariant(
            dim=self.dim,
            n_long=self.n_long,
            epsilon=self.epsilon,
            rotation=self.rotation,
            widths=self.widths,
        )


# --------------------------------------------------------------------------- A7 ensembles


class EnsembleConfig(StrictModel):
    """``lossatlas ensemble``: cyclic-LR snapshot ensembles and their baselines (PAPERS A7).

    The defaults suit MNIST-1D and fit the quick run's budget on two CPU cores, for three
    replicates: 6 snapshots per LR_max (the paper took 10) from cycles of 2 epochs, and 3
    independent members (see :mod:`lossatlas.studies.wedges.ensemble` for the LRs).
    """

    lr_max: list[float] = Field(
        [0.01, 0.03, 0.1, 0.2, 0.4],
        min_length=1,
        description="peak LR of the cycles, one population member each, strictly increasing",
    )
    cycles: int = Field(6, ge=2, description="cycles = snapshots per LR_max (paper: 10)")
    cycle_epochs: float = Field(2.0, gt=0.0, description="length of one cycle in epochs")
    min_factor: float = Field(
        0.01, ge=0.0, lt=1.0, description="LR at a cycle's end, as a fraction of LR_max"
    )
    warmup_epochs: int = Field(
        20, ge=0, description="epochs that train the shared start point before cycling"
    )
    warmup_lr: float = Field(0.1, gt=0.0)
    warmup_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="cosine anneals to 1% of warmup_lr: a settled start point"
    )
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum, or Adam beta1")
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(128, gt=0)
    independent_members: int = Field(
        3, ge=0, description="independent-run baseline ensemble size (0: skip, else >= 2)"
    )
    independent_lr: float = Field(0.1, gt=0.0, description="peak of its cosine schedule")
    fge_cycles: int = Field(6, ge=0, description="FGE baseline snapshots (0: skip, else >= 2)")
    fge_cycle_epochs: float = Field(
        1.0, gt=0.0, description="Garipov et al. use 2-4 epochs; 1 here for the budget"
    )
    fge_lr_max: float = Field(0.05, gt=0.0, description="small: half the warm-up LR")
    fge_min_factor: float = Field(0.01, ge=0.0, lt=1.0)
    bn_batch_size: int = Field(
        1024, gt=0, description="batch size when BatchNorm statistics are recomputed"
    )

    @field_validator("lr_max")
    @classmethod
    def _increasing(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError("every lr_max must be positive")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ValueError("lr_max must be strictly increasing")
        return values

    @field_validator("independent_members", "fge_cycles")
    @classmethod
    def _zero_or_two(cls, value: int) -> int:
        if value == 1:
            raise ValueError("an ensemble baseline needs 0 (skip) or at least 2 members")
        return value


# --------------------------------------------------------------------------- A2-A6 and the study


class CutsOptions(StrictModel):
    """A2: 2-D cuts through the origin and a replicate's first two networks, at several radii."""

    epochs: list[int] = Field(
        default_factory=lambda: [1, 3, 10, 30],
        min_length=1,
        description="training epochs at which to cut (each needs a "
        "snapshot; clipped to the run's length)",
    )
    steps: int = Field(
        41,
        ge=3,
        description="grid points per axis (41: ~50 cells per low-loss region, fine "
        "enough for its elongation)",
    )
    margin: float = Field(0.3, ge=0.0, description="grid margin around the three points")
    eval_samples: int = Field(512, gt=0, description="train samples the loss is averaged over")
    low_loss_factor: float = Field(
        2.0,
        gt=1.0,
        description="a grid point is 'low loss' when "
        "its loss is below this x the optima's mean loss",
    )


def _study_connector() -> ConnectorOptions:
    # Several optimised points (every face barycentre: the subdivision), each trained until it
    # is within 25% of the optima's loss, 30 epochs at most, constant LR (see _study_tunnel).
    return ConnectorOptions(
        epochs=30, tolerance=0.25, shape="subdivision", schedule=ScheduleConfig(kind="constant")
    )


class ConnectOptions(StrictModel):
    """A5: m-connectors joining m+1 optima, for m = 1 .. max_m."""

    max_m: int = Field(3, ge=1, le=7, description="largest m (needs m+1 members per replicate)")
    options: ConnectorOptions = Field(default_factory=_study_connector)


class SweepOptions(StrictModel):
    """A6: tunnel width and short directions under learning rate, L2, dropout, batch, width."""

    epochs: int = Field(10, ge=1)
    lrs: list[float] = Field(default_factory=lambda: [0.025, 0.05, 0.1, 0.2])
    l2s: list[float] = Field(default_factory=lambda: [0.0, 3e-4, 1e-3])
    dropouts: list[float] = Field(default_factory=lambda: [0.0, 0.1])
    batch_sizes: list[int] = Field(default_factory=lambda: [32, 128, 512])
    width_multipliers: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    base_lr: float = Field(0.05, gt=0.0, description="LR of the non-LR sweeps")
    # Widths to 1% (the settings differ by more) on 512 samples, every other epoch: the curves
    # are interpolated at a common norm, so 6 points of each suffice and keep the budget. The
    # default cnn1d's widths are 1.3-7 in these units, so the scan starts at 0.25: its 5 grid
    # points below that never bracketed a crossing (on two trained members: 264 -> 182 loss
    # evaluations per width, the widths equal within the 1% tolerance).
    width: WidthOptions = Field(
        default_factory=lambda: WidthOptions(n_directions=16, tol=1e-2, initial_step=0.25)
    )
    width_every: int = Field(2, ge=1, description="epochs between two width measurements")
    eval_samples: int = Field(512, gt=0, description="train samples for width")


def _study_tunnel() -> ConnectorOptions:
    # Split points train until they are within 25% of the endpoints' loss (CLAIMS.md rule 6),
    # with 30 epochs as the cap, at a constant LR so that an early stop leaves no schedule half
    # done; the joint path is the second way the study reports tunnels.
    return ConnectorOptions(
        epochs=30, tolerance=0.25, joint=True, schedule=ScheduleConfig(kind="constant")
    )


class WedgesConfig(StrictModel):
    """Fort & Jastrzebski (2019): every experiment of PAPERS.md part A."""

    enabled: bool = True
    replicates: int = Field(
        3,
        ge=1,
        description="independent replicates every network claim is decided over (CLAIMS.md "
        "rule 3): the base population is train.members = replicates x m networks, replicate r "
        "owning members r*m .. r*m+m-1; with fewer than 2 there is no interval and network "
        "claims are inconclusive",
    )
    match_tolerance: float = Field(
        0.25,
        gt=0.0,
        description="two points are at matched loss when their train losses differ by at most "
        "this fraction (CLAIMS.md rule 4); counts at unmatched points are inconclusive",
    )
    toy: ToyConfig = Field(default_factory=ToyConfig)
    cuts: CutsOptions = Field(default_factory=CutsOptions)
    tunnel: ConnectorOptions = Field(default_factory=_study_tunnel)
    connect: ConnectOptions = Field(default_factory=ConnectOptions)
    # A4: exact counts from the dense Hessian whenever D <= EXACT_MAX_DIM (method "auto"), on
    # 512 train samples: D Hessian-vector products each, so the sample count sets the cost.
    short_dirs: CountOptions = Field(default_factory=lambda: CountOptions(eval_samples=512))
    sweep: SweepOptions = Field(default_factory=SweepOptions)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
