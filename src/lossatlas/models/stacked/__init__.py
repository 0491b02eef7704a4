"""The stacked engine: K members of a common model as batched matmuls (convolutions as im2col).

:func:`trace_ops` turns a plain chain of ``Linear`` / ``Conv1d`` / activation / ``Flatten``
layers into ops on stacked parameters; :class:`StackedProgram` runs them forward and backward
over a flat ``(K, D)`` buffer. Models it cannot trace raise :class:`NotTraceable`, and the
population trainer then uses its generic ``vmap`` path, which works on any ``nn.Module``.
"""

from lossatlas.models.stacked.program import StackedProgram
from lossatlas.models.stacked.trace import NotTraceable, trace_ops

__all__ = ["NotTraceable", "StackedProgram", "trace_ops"]
