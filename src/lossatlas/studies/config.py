"""Options of the two studies, and ``RunConfig``: the core config plus both study sections.

The study sections live here rather than in :mod:`lossatlas.config` because their defaults are
owned by the modules that run them (the toy model, the ensemble and connector probes), which
themselves build on the core config: keeping them here avoids an import cycle.
"""

from __future__ import annotations

from pydantic import Field

from lossatlas.config import Config, StrictModel, WidthOptions
from lossatlas.probes.connectors import ConnectorOptions
from lossatlas.probes.ensemble import EnsembleConfig
from lossatlas.studies.horoi import HoroiConfig
from lossatlas.toy.experiments import ToyConfig

__all__ = [
    "ConnectOptions",
    "CutsOptions",
    "RunConfig",
    "ShortDirOptions",
    "SweepOptions",
    "WedgesConfig",
]


class CutsOptions(StrictModel):
    """A2: 2-D cuts through the origin and pairs of optima, at several radii of training."""

    epochs: list[int] = Field(
        default_factory=lambda: [1, 3, 10, 30],
        min_length=1,
        description="training epochs at which to cut (each needs a "
        "snapshot; clipped to the run's length)",
    )
    members: int = Field(3, ge=2, description="networks whose optima span the cuts")
    steps: int = Field(25, ge=3, description="grid points per axis")
    margin: float = Field(0.3, ge=0.0, description="grid margin around the three points")
    eval_samples: int = Field(1024, gt=0, description="train samples the loss is averaged over")
    low_loss_factor: float = Field(
        2.0,
        gt=1.0,
        description="a grid point is 'low loss' when "
        "its loss is below this x the optima's mean loss",
    )


class ShortDirOptions(StrictModel):
    """A4: the number of Hessian eigenvalues above curvature thresholds."""

    thresholds: list[float] = Field(default_factory=lambda: [0.01, 0.02, 0.03, 0.05, 0.1])
    method: str = Field(
        "auto",
        pattern="^(auto|exact|slq)$",
        description="exact (dense Hessian) for small D, stochastic Lanczos quadrature otherwise",
    )
    num_probes: int = Field(4, gt=0)
    lanczos_steps: int = Field(60, gt=1)
    eval_samples: int = Field(1024, gt=0, description="train samples the Hessian is taken on")


class ConnectOptions(StrictModel):
    """A5: m-connectors joining m+1 optima, for m = 1 .. max_m."""

    max_m: int = Field(3, ge=1, le=10, description="largest m (needs m+1 trained members)")
    options: ConnectorOptions = Field(default_factory=ConnectorOptions)


class SweepOptions(StrictModel):
    """A6: tunnel width and short directions under learning rate, L2, dropout, batch, width."""

    epochs: int = Field(10, ge=1)
    lrs: list[float] = Field(default_factory=lambda: [0.025, 0.05, 0.1, 0.2])
    l2s: list[float] = Field(default_factory=lambda: [0.0, 3e-4, 1e-3])
    dropouts: list[float] = Field(default_factory=lambda: [0.0, 0.1])
    batch_sizes: list[int] = Field(default_factory=lambda: [32, 128, 512])
    width_multipliers: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    base_lr: float = Field(0.05, gt=0.0, description="LR of the non-LR sweeps")
    width: WidthOptions = Field(default_factory=lambda: WidthOptions(n_directions=16))
    eval_samples: int = Field(1024, gt=0, description="train samples for width and curvature")


class WedgesConfig(StrictModel):
    """Fort & Jastrzebski (2019): every experiment of PAPERS.md part A."""

    enabled: bool = True
    toy: ToyConfig = Field(default_factory=ToyConfig)
    cuts: CutsOptions = Field(default_factory=CutsOptions)
    tunnel: ConnectorOptions = Field(default_factory=ConnectorOptions)
    connect: ConnectOptions = Field(default_factory=ConnectOptions)
    short_dirs: ShortDirOptions = Field(default_factory=ShortDirOptions)
    sweep: SweepOptions = Field(default_factory=SweepOptions)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)


class RunConfig(Config):
    """Everything ``lossatlas run`` needs: the core config plus both studies."""

    wedges: WedgesConfig = Field(default_factory=WedgesConfig)
    horoi: HoroiConfig = Field(default_factory=HoroiConfig)
