"""Options of the path probes: how tunnels and m-connectors are optimised, evaluated, sampled."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lossatlas.config import ScheduleConfig, StrictModel
from lossatlas.probes._simplex import Shape

__all__ = ["ConnectorOptions"]


class ConnectorOptions(StrictModel):
    """How tunnels and m-connectors are optimised, evaluated and sampled.

    The defaults run in seconds on MNIST-1D MLPs (see the module docstring).
    """

    points: int = Field(9, ge=1, description="tunnel split points k, at t = i / (k + 1)")
    epochs: int = Field(
        5, ge=0, description="passes over the train split per point (a cap with tolerance)"
    )
    tolerance: float | None = Field(
        None,
        gt=0.0,
        description="train each point until its train loss is at most (1 + tolerance) x the "
        "optima's mean train loss (then it is frozen), with epochs as the cap; the gap reached "
        "is reported. None: train every point for exactly epochs",
    )
    joint: bool = Field(
        False,
        description="tunnel: also optimise the split points jointly, against the loss along "
        "the segments between them, under the same hyperplane constraints",
    )
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam"] = Field(
        "sgd", description="adam is re-projected after every step; give it a smaller lr (1e-3)"
    )
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum, or Adam beta1")
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(kind="cosine"),
        description="LR schedule; cosine decay lets the points settle in few epochs",
    )
    path_resolution: int = Field(8, ge=1, description="evaluation points per tunnel segment")
    dirichlet_samples: int = Field(64, ge=1, description="samples evaluated on a connector")
    shape: Shape = Field(
        "star",
        description="m-connector: cone (centroid; simplices on the facets), star (centroid; "
        "segments to the optima) or subdivision (every face barycentre optimised)",
    )
    method: Literal["projected", "benton"] = Field(
        "projected", description="m-connector: projected gradient, or Benton et al.'s simplex"
    )
    benton_volume: float = Field(
        1e-3, ge=0.0, description="weight of the -log(volume) term of the benton method"
    )
    benton_samples: int = Field(4, gt=0, description="Dirichlet samples per step (benton)")
    eval_batch_size: int = Field(2048, gt=0, description="samples per evaluation forward pass")
    seed: int = 0
