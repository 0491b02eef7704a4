"""Learning-rate schedules: a multiplier of each member's base LR as a function of the step.

All schedules are pure functions of ``(step, steps_per_epoch)``, so resuming or fanning out
units never needs schedule state.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from lossatlas.config import ScheduleConfig

__all__ = ["Schedule", "make_schedule"]


@dataclass(frozen=True)
class Schedule:
    """LR multiplier for step ``t`` of a run with ``steps_per_epoch`` and ``total_steps``.

    Kinds:
        constant: 1.
        step: multiplied by ``gamma`` at each epoch in ``milestones``.
        cosine: half a cosine from 1 down to ``min_factor`` over the whole run.
        cyclic: cosine restarts, each ``cycle_epochs`` long, from 1 down to ``min_factor``.
            This is the snapshot-ensemble / FGE cycle; the cycle ends where the LR is lowest,
            which is where snapshots are taken.
    """

    config: ScheduleConfig
    steps_per_epoch: int
    total_steps: int

    def __call__(self, step: int) -> float:
        cfg = self.config
        epoch = step / self.steps_per_epoch
        if cfg.kind == "constant":
            return 1.0
        if cfg.kind == "step":
            passed = bisect.bisect_right(sorted(cfg.milestones), epoch)
            return cfg.gamma**passed
        if cfg.kind == "cosine":
            progress = min(step / max(self.total_steps, 1), 1.0)
            return _cosine(progress, cfg.min_factor)
        if cfg.kind == "cyclic":
            cycle_steps = max(round(cfg.cycle_epochs * self.steps_per_epoch), 1)
            # +1 so the last step of a cycle reaches the minimum rather than one step before it.
            progress = ((step % cycle_steps) + 1) / cycle_steps
            return _cosine(progress, cfg.min_factor)
        raise ValueError(f"unknown schedule kind '{cfg.kind}'")

    def cycle_ends(self) -> list[int]:
        """Steps after which a cyclic cycle ends (where snapshots are taken)."""
        if self.config.kind != "cyclic":
            return []
        cycle_steps = max(round(self.config.cycle_epochs * self.steps_per_epoch), 1)
        return list(range(cycle_steps, self.total_steps + 1, cycle_steps))


def _cosine(progress: float, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_schedule(config: ScheduleConfig, steps_per_epoch: int, epochs: int) -> Schedule:
    """A :class:`Schedule` for a run of ``epochs`` epochs."""
    return Schedule(config, steps_per_epoch, steps_per_epoch * epochs)
