"""Stages: library functions that read their inputs from, and write their outputs to, the store.

The CLI commands are thin wrappers around these.
"""

from lossatlas.stages.train import TRAIN_GROUP, TrainSummary, train_stage

__all__ = ["TRAIN_GROUP", "TrainSummary", "train_stage"]
