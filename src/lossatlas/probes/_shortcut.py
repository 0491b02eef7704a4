"""The first-layer shortcut: skip the one layer whose output is linear in the weights.

On a subspace ``theta = base + sum_k c_k e_k`` the first parametrised layer ``f(u; W, b)`` of
a network sees the same input ``u = prefix(x)`` at every point, and a Linear or Conv layer is
*jointly linear* in its weight and bias, so

    f(u; W_base + sum_k c_k W_k, b_base + sum_k c_k b_k) = f(u; base) + sum_k c_k f(u; e_k).

The ``T = K (+1)`` maps ``f(u; .)`` are computed once per sample block; every point then needs
only ``K`` fused multiply-adds over the layer's output instead of a matmul with the input, and
the rest of the network (the *tail*) runs as usual.

Detection is structural, via ``torch.fx``: the model is traced, and the shortcut applies when
the first node that touches a parameter or buffer is a call of a module whose *exact* type is in
:data:`INPUT_LINEAR_TYPES` (no parametrisations, hooks or shared weights), everything before it
is parameter-free, and nothing after it reads the raw input again. Anything else (untraceable
control flow, BatchNorm on the input, two branches off the input, ...) returns ``None`` and the
caller evaluates the plain model. Tests check the shortcut against plain evaluation in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from lossatlas.params import ParamSlot, ParamSpace

__all__ = [
    "INPUT_LINEAR_TYPES",
    "InputLinearShortcut",
    "TermStack",
    "find_shortcut",
    "map_buffers",
    "register_input_linear",
]

# Module types whose output is a jointly linear function of (weight, bias) for a fixed input.
# Exact types only: a subclass may override forward with something non-linear.
INPUT_LINEAR_TYPES: set[type[nn.Module]] = {nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d}


def register_input_linear(module_type: type[nn.Module]) -> type[nn.Module]:
    """Declare that ``module_type``'s output is jointly linear in all its parameters.

    Usable as a class decorator. The module must compute ``f(u; p)`` with ``f`` linear in its
    parameters ``p`` (all of them direct, not in sub-modules) for a fixed input ``u``.
    """
    INPUT_LINEAR_TYPES.add(module_type)
    return module_type


class TermStack(nn.Module):
    """Stand-in for the model on a subspace: input = sample indices, output = logits.

    Parameters: ``coef`` (K,), the point's coordinates, then the tail's own parameters. The
    precomputed first-layer outputs ``stack`` (T, N_block, *out) are a plain attribute (not a
    buffer) so that ``functional_call`` leaves them alone; term 0 is the base when ``has_base``.
    The input is an index tensor rather than the stack itself because the stack is laid out
    term-major: each term's slab of a contiguous sample range is contiguous, which makes the
    per-point combination 2-3x faster than on a sample-major (N, T, ...) layout.

    ``sub_chunk`` splits one call into cache-sized pieces *inside* the forward pass, so a
    per-point loop pays the per-call costs of evaluation once per point rather than per piece.

    ``per_point`` (set for a per-point loop, never under vmap) keeps the partial sum of all but
    the last term while those coefficients repeat, as they do along the fastest axis of a grid:
    each point then reads two slabs instead of ``T``. For the benchmark's 256-wide MLP the three
    slabs are 11 MB, too big to stay in cache next to the activations, so this halves the memory
    traffic that the shortcut costs. The arithmetic, and so the result, is bit for bit the same.
    """

    def __init__(self, tail: fx.GraphModule, n_coef: int, has_base: bool) -> None:
        super().__init__()
        self.coef = nn.Parameter(torch.zeros(n_coef))
        self.tail = tail
        self.has_base = has_base
        self.stack: Tensor | None = None
        self.sub_chunk: int | None = None
        self.per_point = False
        self._partials: dict[int, tuple[tuple[float, ...], Tensor | None]] = {}

    def bind(self, stack: Tensor | None) -> None:
        """Use ``stack`` (T, N_block, *out) from now on (``None`` to release it)."""
        self.stack = stack
        self._partials = {}

    def forward(self, index: Tensor) -> Tensor:
        stack = self.stack
        assert stack is not None, "bind a stack before evaluating"
        n = index.shape[0]
        lo = int(index[0]) if n else 0
        # evaluate_points passes contiguous sample ranges; slicing is then free.
        if not (n and int(index[-1]) == lo + n - 1):
            return self.tail(self._combine(stack.index_select(1, index), None))
        step = self.sub_chunk or n
        pieces = [
            self.tail(self._combine(stack[:, s : min(s + step, lo + n)], s))
            for s in range(lo, lo + n, step)
        ]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _combine(self, block: Tensor, key: int | None) -> Tensor:
        """``base + sum_k coef_k * term_k`` over the samples of ``block`` (T, n, *out)."""
        coef = self.coef
        terms = block[1:] if self.has_base else block
        count = coef.shape[0]
        if count == 0:
            return block[0].clone()
        if self.per_point and key is not None:
            head = tuple(coef[:-1].tolist())
            cached = self._partials.get(key)
            if cached is None or cached[0] != head:
                cached = (head, self._partial(block, terms, count - 1))
                self._partials[key] = cached
            partial = cached[1]
        else:
            partial = self._partial(block, terms, count - 1)
        if partial is None:
            return terms[0] * coef[0]
        return torch.addcmul(partial, terms[count - 1], coef[count - 1])

    def _partial(self, block: Tensor, terms: Tensor, upto: int) -> Tensor | None:
        """The sum over the base (if any) and the first ``upto`` terms; ``None`` if empty."""
        coef = self.coef
        if self.has_base:
            if upto == 0:
                return block[0]
            acc = torch.addcmul(block[0], terms[0], coef[0])
        elif upto == 0:
            return None
        else:
            acc = terms[0] * coef[0]
        for k in range(1, upto):
            # In place saves an allocation, but vmap has no batching rule for addcmul_.
            acc = (
                acc.addcmul_(terms[k], coef[k])
                if self.per_point
                else acc.addcmul(terms[k], coef[k])
            )
        return acc


@dataclass
class InputLinearShortcut:
    """A model split into ``prefix -> first layer -> tail``, ready to evaluate subspaces.

    Attributes:
        prefix: parameter-free graph ``x -> u`` (the first layer's input).
        first: the input-linear first layer (a module of the user's model).
        first_slots: ``(local name, slot in the model's flat vector)`` of its parameters.
        tail: graph ``first-layer output -> logits``; shares modules with the model.
        tail_index: ``(D_tail,)`` positions in the model's flat vector of the tail's
            parameters, in the tail's own flat order.
        buffer_map: tail buffer name (with the ``tail.`` prefix) -> the model's buffer name.
    """

    prefix: fx.GraphModule
    first: nn.Module
    first_slots: list[tuple[str, ParamSlot]]
    tail: fx.GraphModule
    tail_index: Tensor
    buffer_map: dict[str, str]

    def stand_in(self, n_coef: int, has_base: bool) -> tuple[TermStack, ParamSpace]:
        """The stand-in module for ``n_coef`` coordinates, and its parameter space."""
        module = TermStack(self.tail, n_coef, has_base)
        # Eval from the start: evaluate_points restores the flag it finds, and the tail's
        # modules are the user's, which must not be left in train mode between calls.
        module.eval()
        return module, ParamSpace(module)

    def lift(self, base: Tensor | None, terms: Tensor, n_coef: int) -> tuple[Tensor | None, Tensor]:
        """Map ``base`` (D,) and ``terms`` (K, D) into the stand-in's flat space.

        A point ``base + c @ terms`` becomes ``base' + c @ terms'`` with
        ``terms' = [I_K | terms[:, tail]]`` and ``base' = [0_K | base[tail]]``: the first
        ``K`` stand-in coordinates are ``c`` itself.
        """
        index = self.tail_index.to(terms.device)
        eye = torch.eye(n_coef, dtype=terms.dtype, device=terms.device)
        lifted = torch.cat([eye, terms.index_select(1, index)], dim=1)
        if base is None:
            return None, lifted
        zeros = base.new_zeros(n_coef)
        return torch.cat([zeros, base.index_select(0, index.to(base.device))]), lifted

    @torch.no_grad()
    def precompute(self, x: Tensor, base: Tensor | None, terms: Tensor) -> Tensor:
        """First-layer outputs ``(T, n, *out)`` of ``x`` (n, *input) for base (if any) + terms."""
        u = self.prefix(x)
        rows = ([] if base is None else [base]) + list(terms.unbind(0))
        outputs = []
        for row in rows:
            params = {
                name: row[slot.start : slot.stop].view(slot.shape)
                for name, slot in self.first_slots
            }
            outputs.append(functional_call(self.first, params, (u,), strict=True))
        return torch.stack(outputs)


def find_shortcut(model: nn.Module, space: ParamSpace) -> tuple[InputLinearShortcut | None, str]:
    """Split ``model`` for the first-layer shortcut, or say why it does not apply.

    Returns ``(shortcut, "")`` or ``(None, reason)``.
    """
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception as error:  # any untraceable model simply takes the plain path
        return None, f"not traceable with torch.fx ({type(error).__name__})"
    graph = graph_module.graph
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None, "forward takes more than one input"

    first_node = None
    for node in nodes:
        if node.op == "get_attr":
            return None, f"'{node.target}' is read before any input-linear layer"
        if node.op == "call_module":
            module = graph_module.get_submodule(str(node.target))
            stateful = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
            if stateful:
                first_node = node
                break
    if first_node is None:
        return None, "no parametrised module found"
    first = graph_module.get_submodule(str(first_node.target))
    reason = _first_layer_problem(first, first_node)
    if reason:
        return None, reason

    prefix = _prefix_graph(graph_module, nodes, first_node)
    tail = _tail_graph(graph_module, nodes, first_node)
    if tail is None:
        return None, "the raw input is used again after the first layer"
    first_ids = {id(p) for p in first.parameters()}
    if any(id(p) in first_ids for p in tail.parameters()):
        return None, "the first layer's parameters are used again later"

    slot_of = {
        id(p): slot for (_, p), slot in zip(model.named_parameters(), space.slots, strict=True)
    }
    first_slots = [(name, slot_of[id(p)]) for name, p in first.named_parameters()]
    pieces = []
    for p in tail.parameters():
        slot = slot_of.get(id(p))
        if slot is None:
            return None, "the traced graph holds parameters the model does not list"
        pieces.append(torch.arange(slot.start, slot.stop))
    tail_index = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
    buffer_name = {id(b): name for name, b in model.named_buffers()}
    buffer_map = {}
    for name, b in tail.named_buffers():
        if id(b) not in buffer_name:
            return None, "the traced graph holds buffers the model does not list"
        buffer_map[f"tail.{name}"] = buffer_name[id(b)]
    return (
        InputLinearShortcut(prefix, first, first_slots, tail, tail_index, buffer_map),
        "",
    )


def _first_layer_problem(first: nn.Module, node: fx.Node) -> str:
    if type(first) not in INPUT_LINEAR_TYPES:
        return f"the first parametrised layer is a {type(first).__name__}, not input-linear"
    if parametrize.is_parametrized(first):
        return "the first layer is parametrised (e.g. weight norm)"
    if first._forward_hooks or first._forward_pre_hooks:
        return "the first layer has forward hooks"
    if any(True for _ in first.buffers()) or any(True for _ in first.children()):
        return "the first layer has buffers or sub-modules"
    if len(node.args) != 1 or node.kwargs:
        return "the first layer is called with more than one argument"
    return ""


def _prefix_graph(
    graph_module: fx.GraphModule, nodes: list[fx.Node], first_node: fx.Node
) -> fx.GraphModule:
    """``x -> input of the first layer``: a copy of the (parameter-free) nodes before it."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        if node is first_node:
            break
        env[node] = graph.node_copy(node, lambda n: env[n])
    arg = first_node.args[0]
    assert isinstance(arg, fx.Node)
    graph.output(env[arg])
    prefix = fx.GraphModule(graph_module, graph)
    prefix.graph.eliminate_dead_code()  # needs the owning module for its purity check
    prefix.recompile()
    return prefix


def _tail_graph(
    graph_module: fx.GraphModule, nodes: list[fx.Node], first_node: fx.Node
) -> fx.GraphModule | None:
    """``first-layer output -> model output``, or ``None`` when the tail needs the raw input."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {first_node: graph.placeholder("pre")}
    after = False
    for node in nodes:
        if node is first_node:
            after = True
            continue
        if not after:
            continue
        if any(dep not in env for dep in node.all_input_nodes):
            return None
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.lint()
    return fx.GraphModule(graph_module, graph)


def map_buffers(shortcut: InputLinearShortcut, buffers: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the model's buffers (possibly batched) to the stand-in's names."""
    return {new: buffers[old] for new, old in shortcut.buffer_map.items()}
