"""Trace a common model into a chain of stacked ops, or say why it cannot be traced.

``torch.fx.symbolic_trace`` gives the module's graph. It is accepted when it is a plain chain
(each node consumes the one before it) of: ``Linear``; ``Conv1d`` (zero padding, one group);
``ReLU``, ``Tanh``, ``GELU``; ``Flatten`` of everything after the batch dimension;
``Identity`` and ``Dropout(p=0)`` (skipped); and ``x.reshape(x.shape[0], ...)`` /
``x.view(x.shape[0], ...)`` per-sample reshapes. Every parameter must be used exactly once and
the model must have no buffers. Anything else (BatchNorm, dropout, residual connections,
custom functions) raises :class:`NotTraceable`, and callers fall back to ``vmap``.
"""

from __future__ import annotations

import operator
from typing import Any

import torch.fx
from torch import nn

from lossatlas.models.stacked.ops import (
    Activation,
    ChannelsFirst,
    ChannelsLast,
    Conv1d,
    Flatten,
    Linear,
    Op,
    Reshape,
)
from lossatlas.params import ParamSpace

__all__ = ["NotTraceable", "trace_ops"]


class NotTraceable(Exception):
    """The model is outside what the stacked engine covers (a reason, not an error)."""


_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.GELU: "gelu"}


def trace_ops(space: ParamSpace) -> list[Op]:
    """The model of ``space`` as a chain of ops on ``(K, B, ...)`` values.

    Convolutions run channels-last; layout changes are inserted at the edges of each run of
    them. The chain takes ``(K, B, *input)`` and ends in ``(K, B, classes)``.
    """
    model = space.model
    if any(True for _ in model.named_buffers()):
        raise NotTraceable("the model has buffers (BatchNorm statistics)")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # any tracing failure means "use vmap"
        raise NotTraceable(f"torch.fx cannot trace it: {exc}") from None
    slots = {s.name: s for s in space.slots}
    used: set[str] = set()
    modules = dict(model.named_modules())
    ops: list[Op] = []
    current: torch.fx.Node | None = None
    shape_nodes: set[torch.fx.Node] = set()
    batch_nodes: set[torch.fx.Node] = set()

    def param(path: str, name: str) -> Any:
        full = f"{path}.{name}" if path else name
        if getattr(modules[path], name) is None:
            return None
        if full not in slots:
            raise NotTraceable(f"parameter {full} is not in the parameter space")
        if full in used:  # a module called twice: its gradient is a sum the ops do not form
            raise NotTraceable(f"parameter {full} is used more than once")
        used.add(full)
        return slots[full]

    def chained(node: torch.fx.Node, value: Any) -> None:
        if value is not current:
            raise NotTraceable(f"{node.name} does not consume the previous value (not a chain)")

    for node in graph.nodes:
        if node.op == "placeholder":
            if current is not None:
                raise NotTraceable("the model takes more than one input")
            current = node
        elif node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            chained(node, node.args[0])
            shape_nodes.add(node)
        elif node.op == "call_function" and node.target is operator.getitem:
            if node.args[0] not in shape_nodes or node.args[1] != 0:
                raise NotTraceable(f"unsupported indexing {node.format_node()}")
            batch_nodes.add(node)
        elif node.op == "call_method" and node.target in ("reshape", "view"):
            chained(node, node.args[0])
            dims = node.args[1:]
            if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
                dims = tuple(dims[0])
            if (
                not dims
                or dims[0] not in batch_nodes
                or not all(isinstance(d, int) for d in dims[1:])
            ):
                raise NotTraceable(f"only per-sample reshapes are supported: {node.format_node()}")
            ops.append(Reshape(tuple(int(d) for d in dims[1:])))
            current = node
        elif node.op == "call_module":
            chained(node, node.args[0])
            module = modules[node.target]
            ops.extend(_module_ops(module, node.target, param))
            current = node
        elif node.op == "output":
            chained(node, node.args[0])
        else:
            raise NotTraceable(f"unsupported operation {node.format_node()}")
    missing = set(slots) - used
    if missing:
        raise NotTraceable(f"parameters not used by a traced op: {sorted(missing)}")
    if not any(isinstance(op, (Linear, Conv1d)) for op in ops):
        raise NotTraceable("no Linear or Conv1d layer")
    return _with_layouts(ops)


def _module_ops(module: nn.Module, path: str, param: Any) -> list[Op]:
    if isinstance(module, nn.Linear):
        return [Linear(param(path, "weight"), param(path, "bias"))]
    if isinstance(module, nn.Conv1d):
        if (
            module.groups != 1
            or module.padding_mode != "zeros"
            or isinstance(module.padding, str)
            or module.dilation != (1,)
        ):
            raise NotTraceable(f"{path}: only zero-padded, ungrouped, undilated Conv1d")
        return [
            Conv1d(
                param(path, "weight"),
                param(path, "bias"),
                stride=module.stride[0],
                padding=module.padding[0],
            )
        ]
    for kind, name in _ACTIVATIONS.items():
        if isinstance(module, kind):
            approximate = getattr(module, "approximate", "none")
            return [Activation(name, approximate)]
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise NotTraceable(f"{path}: only Flatten(1, -1) is supported")
        return [Flatten()]
    if isinstance(module, nn.Identity) or (isinstance(module, nn.Dropout) and module.p == 0):
        return []
    raise NotTraceable(f"{path}: {type(module).__name__} is not supported")


def _with_layouts(ops: list[Op]) -> list[Op]:
    """Wrap each run of convolutions (and the activations inside it) in layout changes."""
    out: list[Op] = []
    channels_last = False
    for op in ops:
        wants = op.layout == "channels_last" or (isinstance(op, Activation) and channels_last)
        if wants != channels_last:
            out.append(ChannelsLast() if wants else ChannelsFirst())
            channels_last = wants
        out.append(op)
    if channels_last:
        out.append(ChannelsFirst())
    return out
