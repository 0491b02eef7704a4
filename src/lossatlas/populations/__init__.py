"""Everything that trains many points: :mod:`~.train` (K members in lock-step), :mod:`~.jump`
(jump and retrain) and :mod:`~.cyclic` (cyclic-LR snapshots). No module here writes to the store;
the stages do (:mod:`lossatlas.stages`).
"""

from lossatlas.populations.cyclic import CyclicSnapshots, cyclic_snapshots
from lossatlas.populations.jump import JumpOptions, JumpRun, jump_and_retrain
from lossatlas.populations.train import Population, TrainPlan, fit_members, train_population

__all__ = [
    "CyclicSnapshots",
    "JumpOptions",
    "JumpRun",
    "Population",
    "TrainPlan",
    "cyclic_snapshots",
    "fit_members",
    "jump_and_retrain",
    "train_population",
]
