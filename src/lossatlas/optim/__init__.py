"""Functional optimisers and learning-rate schedules over flat ``(K, D)`` populations."""

from lossatlas.optim.optimizers import (
    SGD,
    Adam,
    FunctionalOptimizer,
    HyperParams,
    make_optimizer,
)
from lossatlas.optim.schedules import Schedule, make_schedule

__all__ = [
    "SGD",
    "Adam",
    "FunctionalOptimizer",
    "HyperParams",
    "Schedule",
    "make_optimizer",
    "make_schedule",
]
