"""Units of work and the executors that run them (see :mod:`lossatlas.execute.base`)."""

from lossatlas.execute.base import Executor, Unit, run_units
from lossatlas.execute.local import LocalExecutor
from lossatlas.execute.registry import executor_for, get_executor

__all__ = ["Executor", "LocalExecutor", "Unit", "executor_for", "get_executor", "run_units"]
