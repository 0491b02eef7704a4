"""The exact dense Hessian from Hessian-vector products with basis vectors, and its spectrum.

Column ``i`` of ``H`` is ``H e_i``, a forward-over-reverse product ``jvp(grad(loss), e_i)``.
The ``D`` columns are taken in blocks: a block of ``b`` basis vectors goes through one
``torch.func.vmap`` call, so its matmuls see ``b x`` the rows. On CPU a block of one is the
default: the primal half of the product is then traced once per sample chunk with
``torch.func.linearize`` and only its tangent half is replayed per column, which measured
fastest on 2 cores (cnn1d width 16, D = 2474, 512 samples: 3.7 ms per column against 6.8-15 ms
vmapped in blocks of 8-256, whose grouped convolutions are slow there; MLPs were within 10% of
each other either way). On an accelerator the block is as large as the memory budget allows.

On CPU the replayed columns are spread over ``torch.get_num_threads()`` Python threads that
each run torch with one intra-op thread (torch releases the GIL inside its kernels). The
products are too small for torch's own threads: 400 columns of that cnn1d took 1.93 s on two
torch threads, 2.78 s on one, and 1.62 s as two Python threads of one torch thread each. Every
column is then computed exactly as on one thread, so the Hessian is the same on any number of
cores.

With the default loss, the block of a final ``Linear`` head is taken in closed form instead
(:mod:`lossatlas.probes.curvature._head`): only the other parameters' columns are products.

**Plain layer chains** (``Linear``, ``Conv1d``, ReLU or tanh, ``Flatten``: what the stacked
population engine traces) under the default loss skip all of the above: their columns come
from hand-written products on many columns at once (:mod:`lossatlas.probes.curvature._chain`),
which measured 9x faster on the cnn1d above (0.87 s against 8.2 s for all 2,474 columns on
2 cores, 512 samples). ``engine="autodiff"`` forces the general path.

Memory is bounded by ``memory_bytes``: the sample chunk and the block are sized from the
activations of one sample (counted by a forward pass), so that
``chunk x block x activations x 4 x itemsize`` (primal and tangent, forward and backward)
stays below it. The result is symmetrised, ``(H + H^T) / 2``, which only removes rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jvp, linearize, vmap

from lossatlas.data.adapter import train_tensors
from lossatlas.evaluate import LossFn
from lossatlas.models.stacked import NotTraceable
from lossatlas.params import ParamSpace
from lossatlas.probes.curvature._chain import ChainHessian
from lossatlas.probes.curvature._head import Head, find_head, head_block
from lossatlas.probes.curvature.operator import DENSE_MAX_DIM, HessianOperator, eval_mode
from lossatlas.threads import on_threads

__all__ = ["DENSE_MEMORY_BYTES", "DenseEngine", "dense_hessian", "hessian_spectrum"]

DenseEngine = Literal["auto", "chain", "autodiff"]
"""How :func:`dense_hessian` takes its columns: ``chain`` (hand-written products for plain
layer chains under the default loss), ``autodiff`` (``torch.func`` products, any model), or
``auto`` (chain when the model and loss allow it)."""


# Working memory one block of columns may take (activations of its primal and tangents).
DENSE_MEMORY_BYTES = 1 << 30

# Below this many samples x D a product is dispatch-bound and tracing does not pay: all columns
# of a chunk go through one vmap call instead (when the budget allows).
_TRACE_MIN_WORK = 2_000_000

# Forward and backward, each with primal and tangent: activations held per sample and column.
_ACTIVATION_COPIES = 4

# The chain engine keeps every op's input tangent, im2col patches of them (x kernel size) and
# the backward tangents: a generous count of activation copies per sample and column.
_CHAIN_ACTIVATION_COPIES = 12

# Samples x columns per chain block: on 2 cores blocks of 8-32 columns of 512 samples ran
# within 10% of each other for cnn1d (0.77-0.85 s for all columns); 256 columns took 2.0 s.
_CHAIN_SAMPLE_COLUMNS = 8192


def _activation_numel(
    model: nn.Module, space: ParamSpace, theta: Tensor, x: Tensor, buffers: Mapping[str, Tensor]
) -> int:
    """Numbers the leaf modules of ``model`` output for one sample (a forward pass on ``x[:1]``)."""
    total = [int(x[:1].numel())]

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            total[0] += int(output.numel())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        # Eval mode, as the products are taken: BatchNorm cannot normalise one sample in training.
        with eval_mode(model, True), torch.no_grad():
            space.forward(theta, x[:1], buffers)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def dense_hessian(
    model: nn.Module,
    data: Any,
    *,
    params: Tensor | None = None,
    loss_fn: LossFn | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int | None = None,
    block_size: int | None = None,
    memory_bytes: int = DENSE_MEMORY_BYTES,
    engine: DenseEngine = "auto",
) -> Tensor:
    """The exact ``(D, D)`` Hessian of the mean loss, from ``D`` Hessian-vector products.

    Checked against ``torch.autograd.functional.hessian`` (reverse-over-reverse, an
    independent code path) in float64 by the test suite, to 1e-10.

    Args:
        model, data, params, loss_fn, buffers: as for :class:`HessianOperator`.
        batch_size: samples per chunk (default: as many as the memory budget allows); each
            chunk's mean loss is weighted by its share of the samples.
        block_size: basis vectors per ``vmap`` call. ``None``: 1 on CPU (traced products, see
            the module docstring), else the largest block the budget allows. For tiny problems
            (samples x D below ``_TRACE_MIN_WORK``) all columns go in one call when they fit.
        memory_bytes: working-memory budget for one block's activations.
        engine: ``"auto"`` (default): the chain engine when the model is a plain layer chain
            and the loss is the default one, else ``"autodiff"`` (see the module docstring).
            ``"chain"`` raises ``ValueError`` when it cannot be used.

    Returns:
        ``(D, D)`` symmetric, in the dtype and on the device of ``params``.

    Raises:
        ValueError: if ``D > DENSE_MAX_DIM`` (use the operator-based functions instead), or
            ``engine="chain"`` for a model or loss it does not cover.
    """
    space = ParamSpace(model)
    if space.dim > DENSE_MAX_DIM:
        raise ValueError(
            f"dense_hessian refuses D={space.dim} > {DENSE_MAX_DIM} (a D x D matrix); use "
            "hessian_eigenvalues, spectral_density or count_above(method='slq') instead"
        )
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if engine not in ("auto", "chain", "autodiff"):
        raise ValueError(f"unknown engine '{engine}' (use auto, chain or autodiff)")
    # Only for its resolved point, data and buffers: no product is taken through it.
    op = HessianOperator(
        model,
        data,
        params=params,
        loss_fn=loss_fn,
        buffers=buffers,
        check_deterministic=False,
        linearize=False,
    )
    x, y = train_tensors(data)
    x = x.to(op.device, dtype=op.dtype if x.is_floating_point() else None)
    y = y.to(op.device)
    dim, n = op.dim, op.num_samples
    itemsize = torch.finfo(op.dtype).bits // 8
    per_sample = _activation_numel(model, space, op.params, x, op.buffers) * itemsize
    chain = _chain_engine(space, op, y, loss_fn, engine)
    if chain is not None:
        return _chain_hessian(chain, op, x, y, per_sample, batch_size, block_size, memory_bytes)
    per_column = _ACTIVATION_COPIES * per_sample  # bytes per sample and column
    chunk = batch_size or max(1, min(n, memory_bytes // per_column))
    fits_all = chunk * dim * per_column <= memory_bytes
    if block_size is None:
        if min(chunk, n) * dim < _TRACE_MIN_WORK and fits_all:
            block_size = dim
        elif op.device.type == "cpu":
            block_size = 1
        else:
            block_size = max(1, memory_bytes // (per_column * min(chunk, n)))
    loss = loss_fn or F.cross_entropy
    head = _closed_form_head(model, space, op, x, y, loss_fn)
    columns = torch.arange(dim, device=op.device)
    if head is not None:  # the head's own columns come from the closed form and symmetry
        columns = columns[~torch.isin(columns, head.index)]
    total = torch.zeros(op.shape, dtype=op.dtype, device=op.device)
    with eval_mode(model, True), torch.no_grad(), warnings.catch_warnings():
        # torch's const-folding pass (inside linearize) warns about an internal detail.
        warnings.filterwarnings("ignore", message=".*get_attr.*", category=UserWarning)
        for s in range(0, n, chunk):
            xs, ys = x[s : s + chunk], y[s : s + chunk]
            weight = xs.shape[0] / n

            def chunk_loss(theta: Tensor, xs: Tensor = xs, ys: Tensor = ys) -> Tensor:
                return loss(space.forward(theta, xs, op.buffers), ys)

            product = _product(grad(chunk_loss), op.params, block_size)
            blocks = [columns[c : c + block_size] for c in range(0, columns.numel(), block_size)]

            def fill(
                share: list[Tensor],
                product: Callable[[Tensor], Tensor] = product,
                weight: float = weight,
            ) -> None:
                with torch.no_grad():  # grad mode is per thread
                    for rows in share:
                        # H is symmetric: H e_i is row i as well as column i. Each row is
                        # written by one thread only.
                        total[rows] += weight * product(_basis(rows, op))

            workers = torch.get_num_threads() if block_size == 1 else 1
            if op.device.type != "cpu" or workers == 1 or len(blocks) < 4 * workers:
                fill(blocks)
            else:
                # The traced tangent folds its constants on its first call, which is not
                # thread-safe: make that call here, then replay on the threads.
                fill(blocks[:1])
                on_threads(lambda block: fill([block]), blocks[1:], workers)
            if head is not None:
                block = head_block(head, space, op.params, xs, op.buffers) / n
                total[head.index.unsqueeze(1), head.index] += block.to(total.dtype)
    if head is not None:
        # The head's rows hold only its own block so far; its cross terms are the other
        # parameters' rows, transposed.
        total[head.index.unsqueeze(1), columns] = total[columns.unsqueeze(1), head.index].T
    return (total + total.T) / 2


def _default_loss(y: Tensor, loss_fn: LossFn | None) -> bool:
    """Whether the loss is the default mean cross-entropy on class labels ``(N,)`` (negative
    labels would be ignored by ``F.cross_entropy`` and change the mean)."""
    return loss_fn is None and y.dim() == 1 and not y.is_floating_point() and not (y < 0).any()


def _chain_engine(
    space: ParamSpace, op: HessianOperator, y: Tensor, loss_fn: LossFn | None, engine: str
) -> ChainHessian | None:
    """The chain engine, when ``engine`` asks for it and the model and loss allow it."""
    if engine == "autodiff":
        return None
    reason = None
    if not _default_loss(y, loss_fn):
        reason = "the loss is not the default cross-entropy on class labels"
    elif op.buffers:
        reason = "the model has buffers"
    else:
        try:
            return ChainHessian(space)
        except NotTraceable as exc:
            reason = str(exc)
    if engine == "chain":
        raise ValueError(f"engine='chain' cannot take this Hessian: {reason}")
    return None


def _chain_hessian(
    chain: ChainHessian,
    op: HessianOperator,
    x: Tensor,
    y: Tensor,
    per_sample: int,
    batch_size: int | None,
    block_size: int | None,
    memory_bytes: int,
) -> Tensor:
    """The Hessian by the chain engine, in sample chunks and column blocks within the budget
    (shared by the CPU threads' blocks)."""
    n = op.num_samples
    workers = torch.get_num_threads() if op.device.type == "cpu" else 1
    per_column = _CHAIN_ACTIVATION_COPIES * per_sample
    chunk = batch_size or max(1, min(n, memory_bytes // (workers * per_column)))
    if block_size is None:
        fits = max(1, memory_bytes // (workers * per_column * min(chunk, n)))
        block_size = max(1, min(fits, _CHAIN_SAMPLE_COLUMNS // min(chunk, n)))
    total = torch.zeros(op.shape, dtype=op.dtype, device=op.device)
    for s in range(0, n, chunk):
        chain.accumulate(
            total, op.params, x[s : s + chunk], y[s : s + chunk], n, block_size, workers
        )
    return chain.symmetric(total)


def _closed_form_head(
    model: nn.Module,
    space: ParamSpace,
    op: HessianOperator,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn | None,
) -> Head | None:
    """The head whose block :func:`head_block` gives exactly, when the loss allows it."""
    if not _default_loss(y, loss_fn):
        return None
    with eval_mode(model, True):
        return find_head(model, space, op.params, x, op.buffers)


def _basis(rows: Tensor, op: HessianOperator) -> Tensor:
    """Basis vectors ``e_r`` for ``r`` in ``rows`` as ``(len(rows), D)``."""
    block = torch.zeros(rows.numel(), op.dim, dtype=op.dtype, device=op.device)
    block[torch.arange(rows.numel(), device=op.device), rows] = 1
    return block


def _product(
    gradient: Callable[[Tensor], Tensor], theta: Tensor, block_size: int
) -> Callable[[Tensor], Tensor]:
    """``V (b, D) -> (H V^T)^T (b, D)`` for one chunk's ``gradient``."""
    if block_size == 1:
        _, tangent = linearize(gradient, theta)
        return lambda block: tangent(block[0]).unsqueeze(0)
    return vmap(lambda v: jvp(gradient, (theta,), (v,))[1])


def hessian_spectrum(
    model: nn.Module,
    data: Any,
    **kwargs: Any,
) -> Tensor:
    """All ``D`` eigenvalues of the exact Hessian, ascending, ``(D,)`` float64.

    :func:`dense_hessian` (``kwargs`` go to it), then ``eigvalsh`` in float64 whatever the
    parameters' dtype, so counts above small thresholds are not decided by float32 rounding.
    """
    hessian = dense_hessian(model, data, **kwargs)
    return torch.linalg.eigvalsh(hessian.double())
