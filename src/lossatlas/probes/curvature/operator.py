"""The Hessian of the mean loss as a linear operator: ``H v`` forward-over-reverse, never formed."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor, nn
from torch.func import grad, jvp, linearize, vjp, vmap

from lossatlas.data.batches import Batch, BatchAdapter, as_batches, resolve_adapter
from lossatlas.errors import LossAtlasError
from lossatlas.evaluate import LossFn
from lossatlas.params import ParamSpace, Wrt, check_point

__all__ = ["DENSE_MAX_DIM", "EXACT_MAX_DIM", "HessianOperator", "eval_mode"]


# A dense D x D Hessian costs D Hessian-vector products and D^2 floats: 20000 is 1.6 GB in
# float32, the most a laptop should be asked to hold.
DENSE_MAX_DIM = 20_000


# count_above(method="auto") counts exactly up to this D. At D = 3000 the dense route is about
# 3000 HVPs plus an O(D^3) eigvalsh (seconds); SLQ's 8 x 80 = 640 HVPs win above it.
EXACT_MAX_DIM = 3_000


# The primal half of forward-over-reverse (forward pass + gradient) is the same for every v, so
# torch.func.linearize can trace it once and keep only the tangent half: measured ~2x per HVP on
# an MLP 40-256-256-10 with 3600 samples. Tracing costs about a second, so by default it is only
# done when one HVP has at least this many (samples x parameters) to amortise it over, and only
# when all samples fit in one chunk, since the trace keeps every chunk's activations alive.
LINEARIZE_MIN_WORK = 50_000_000


# vmap over v multiplies activation memory by the number of columns: bound sample-columns.
MATMAT_SAMPLE_COLUMNS = 32_768


# matmat loops over columns instead of vmapping once a traced product is this big (see matmat).
VMAP_MAX_WORK = 10_000_000


# dense_hessian vmaps over all D basis vectors at once: bound D x samples per call.
DENSE_SAMPLE_COLUMNS = 262_144


# Lanczos keeps its full basis (P, m, D) for reorthogonalisation: bound its bytes.
LANCZOS_BASIS_BYTES = 1 << 30


@contextlib.contextmanager
def eval_mode(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Evaluate in eval mode, then restore the module's own flags (submodules included)."""
    if not enabled:
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


@functools.cache
def _load_forward_ad() -> None:
    """Run one tiny forward-mode product so torch loads its jvp decompositions now.

    torch 2.13 builds them with ``torch.jit.script`` on first use, which emits a
    DeprecationWarning from inside torch; silencing it here keeps users' ``-W error`` runs (and
    our test suite) working without hiding any warning of theirs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
        )
        jvp(torch.sin, (torch.zeros(()),), (torch.ones(()),))


def _sum(terms: Iterator[Tensor]) -> Tensor:
    # Out-of-place, so it also works on vmap's batched tensors.
    total = next(terms)
    for term in terms:
        total = total + term
    return total


class HessianOperator:
    """The Hessian of the mean training loss at one point, as a ``D x D`` linear operator.

    ``H v`` is computed forward-over-reverse, ``jvp(grad(loss), (theta,), (v,))``: one forward
    and one backward pass, each carrying a tangent, about 2-3 gradient evaluations and no
    second backward graph. The loss is summed over sample chunks (see the module docstring).

    Args:
        model: any ``nn.Module``; used as a stateless template (its parameters are not changed).
        data: ``(X, y)`` tensors, a ``DataLoader`` or any re-iterable of batches (streamed: read
            batch by batch on every product, each moved to the device only while used), or a
            lossatlas ``Dataset`` (train split).
        params: ``(D,)`` point at which the Hessian is taken; default the module's parameters.
        wrt: which parameters span the space (default the trainable ones; see
            :class:`~lossatlas.ParamSpace`): a per-layer Hessian is ``wrt="layer"``.
        loss_fn: ``loss(logits, target) -> mean``; default cross-entropy.
        adapter: how batches are read and scored (:class:`~lossatlas.BatchAdapter`).
        buffers: name -> tensor (BatchNorm statistics); default a copy of the module's.
        batch_size: samples per chunk; bounds activation memory, not the result.
        check_deterministic: apply the operator twice to one random vector on construction and
            raise :class:`~lossatlas.LossAtlasError` if the results differ, which catches
            dropout left on (``eval_mode=False``) or a nondeterministic ``loss_fn``.
        eval_mode: evaluate the module in eval mode (the default). ``False`` keeps the module's
            own flags, e.g. to study BatchNorm with batch statistics.
        linearize: trace the primal computation once with ``torch.func.linearize`` and reuse it
            for every product (about 2x faster, memory of one full forward+backward held).
            ``None`` decides: on when all samples are in memory in one chunk and samples x D is
            at least ``LINEARIZE_MIN_WORK``.

    Attributes:
        shape: ``(D, D)``. dim: ``D``. dtype, device: those of ``params``.
        params: the ``(D,)`` point. space: its :class:`~lossatlas.ParamSpace`.
        num_samples: samples in the loss. linearized: whether the traced path is in use.
        streamed: whether the data is read afresh on every product.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        params: Tensor | None = None,
        wrt: Wrt = None,
        loss_fn: LossFn | None = None,
        adapter: BatchAdapter | None = None,
        buffers: Mapping[str, Tensor] | None = None,
        batch_size: int = 4096,
        check_deterministic: bool = True,
        eval_mode: bool = True,
        linearize: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        _load_forward_ad()
        self.space = ParamSpace(model, wrt)
        self.model = model
        self.eval_mode = eval_mode
        self.adapter = resolve_adapter(adapter, loss_fn)
        self.source = as_batches(data, self.adapter)
        self.batch_size = batch_size
        point = check_point(params)
        if point is None:
            theta = self.space.flatten()
            data_device = self.source.first().device
            if data_device.type != "cpu":  # data on an accelerator: follow it there
                theta = theta.to(data_device)
        else:
            theta = point.detach()
            if theta.shape != (self.space.dim,):
                raise ValueError(
                    f"params must have shape ({self.space.dim},), got {tuple(theta.shape)}"
                )
        if not theta.is_floating_point():
            raise TypeError(f"params must be floating point, got {theta.dtype}")
        self.params = theta
        self.dtype: torch.dtype = theta.dtype
        self.device: torch.device = theta.device
        self.dim: int = self.space.dim
        self.shape: tuple[int, int] = (self.dim, self.dim)
        source = self.space.buffers() if buffers is None else dict(buffers)
        # Floating buffers follow the parameters' dtype, so float64 params work on a float32
        # module (BatchNorm refuses mixed dtypes).
        self.buffers = {
            name: b.detach().to(self.device, dtype=self.dtype if b.is_floating_point() else None)
            for name, b in source.items()
        }
        # In-memory tensors are moved to the device once and kept there, in chunks; anything
        # else is streamed, one batch at a time, on every product.
        self.streamed = not self.source.in_memory
        self._chunks: list[Batch] | None = None
        if not self.streamed:
            self._chunks = list(self.source.stream(self.device, self.dtype, batch_size))
        self._num_samples: int | None = (
            None if self._chunks is None else sum(c.size for c in self._chunks)
        )
        # vmap over v: as many columns per call as keep (columns x chunk samples) bounded.
        widest = batch_size if self._num_samples is None else min(batch_size, self._num_samples)
        self._columns_per_call = max(1, MATMAT_SAMPLE_COLUMNS // widest)
        self._linear: list[Callable[[Tensor], Tensor]] | None = None
        self._reverse = False  # set when forward-over-reverse is not available (see _hvp)
        single_chunk = self._chunks is not None and len(self._chunks) == 1
        if linearize is None:
            linearize = single_chunk and self.num_samples * self.dim >= LINEARIZE_MIN_WORK
        if linearize and self._chunks is None:
            raise ValueError("linearize=True needs in-memory (X, y) data, not a stream")
        reference = None
        if check_deterministic:
            probe = torch.randn(self.dim, generator=torch.Generator().manual_seed(0))
            reference = self._jvp_matvec(probe.to(self.device, self.dtype))
        if linearize and not self._reverse:
            try:
                self._linear = self._linearize()
            except RuntimeError as err:  # no forward-mode rule: products stay untraced
                if "ZeroTensor" not in str(err):
                    raise
        self.linearized = self._linear is not None
        chunk_work = widest * self.dim
        self._vmap_columns = not (self.linearized and chunk_work >= VMAP_MAX_WORK)
        if reference is not None:
            again = self.matvec(probe)
            gap = float((again - reference).norm())
            size = float(torch.maximum(reference.norm(), again.norm()))
            # Rounding differs only at the dtype's precision (the traced path may reorder ops);
            # dropout or a random loss changes H v at order 1.
            tol = 10 * torch.finfo(self.dtype).eps ** 0.5  # 3e-3 in float32, 1.5e-7 in float64
            if gap > tol * max(size, torch.finfo(self.dtype).tiny):
                raise LossAtlasError(
                    "the Hessian-vector product is not deterministic (two products with the "
                    f"same vector differ by {gap / max(size, 1e-30):.2e} relative): is dropout "
                    "or another random layer active, or is loss_fn random? Use eval_mode=True "
                    "or a deterministic loss."
                )

    @property
    def num_samples(self) -> int:
        """Samples in the loss (for streamed data: counted on the first pass)."""
        if self._num_samples is None:
            self._num_samples = self.source.num_samples()
        return self._num_samples

    # ------------------------------------------------------------------ construction helpers

    def _iter_chunks(self) -> Iterator[Batch]:
        """The loss's sample chunks on the device (streamed data: read now, batch by batch)."""
        if self._chunks is not None:
            yield from self._chunks
            return
        count = 0
        for chunk in self.source.stream(self.device, self.dtype, self.batch_size):
            count += chunk.size
            yield chunk
        self._num_samples = count

    def _chunk_grad(self, chunk: Batch) -> Callable[[Tensor], Tensor]:
        """``theta -> grad of (n_chunk x the chunk's mean loss)``."""
        space, buffers, adapter = self.space, self.buffers, self.adapter

        def chunk_loss(theta: Tensor) -> Tensor:
            out = space.call(theta, chunk.args, chunk.kwargs, buffers)
            return adapter.batch_loss(out, chunk) * chunk.size

        return grad(chunk_loss)

    def _hvp(self, g: Callable[[Tensor], Tensor], v: Tensor) -> Tensor:
        """``d/dt g(theta + t v)``: forward-over-reverse, or reverse-over-reverse where torch
        has no forward-mode rule for a loss's backward (``F.mse_loss`` against a target without
        tangent fails with "ZeroTensors are immutable" in torch 2.x); ``H`` is symmetric, so
        the vector-Jacobian product of the gradient is the same ``H v``."""
        if not self._reverse:
            try:
                return jvp(g, (self.params,), (v,))[1]
            except RuntimeError as err:
                if "ZeroTensor" not in str(err):
                    raise
                self._reverse = True
        return vjp(g, self.params)[1](v)[0]

    def _linearize(self) -> list[Callable[[Tensor], Tensor]]:
        traced = []
        with eval_mode(self.model, self.eval_mode), warnings.catch_warnings():
            # torch's const-folding pass warns about an internal get_attr detail; harmless.
            warnings.filterwarnings("ignore", message=".*get_attr.*", category=UserWarning)
            assert self._chunks is not None
            for chunk in self._chunks:
                _, fn = linearize(self._chunk_grad(chunk), self.params)
                traced.append(fn)
        return traced

    # ------------------------------------------------------------------ products

    def _jvp_matvec(self, v: Tensor) -> Tensor:
        with eval_mode(self.model, self.eval_mode):
            # Each chunk gives n_b H_b v; the sum over chunks over N is the full-data H v.
            total = _sum(self._hvp(self._chunk_grad(c), v) for c in self._iter_chunks())
        return total / self.num_samples

    def _matvec_impl(self, v: Tensor) -> Tensor:
        if self._linear is None:
            return self._jvp_matvec(v)
        with eval_mode(self.model, self.eval_mode):
            return _sum(fn(v) for fn in self._linear) / self.num_samples

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` for ``v`` of shape ``(D,)`` -> ``(D,)`` (cast to the operator's dtype/device)."""
        if v.shape != (self.dim,):
            raise ValueError(f"expected a vector of shape ({self.dim},), got {tuple(v.shape)}")
        with torch.no_grad():
            return self._matvec_impl(v.to(self.device, self.dtype))

    def matmat(self, matrix: Tensor) -> Tensor:
        """``H V`` for ``V`` of shape ``(D, k)`` -> ``(D, k)``.

        Columns are vectorised with ``vmap`` over the product where that pays, in blocks that
        keep ``columns x chunk samples <= MATMAT_SAMPLE_COLUMNS`` (activation memory grows with
        both). Measured on 2 CPU cores (MLPs and a Conv1d net, D = 66 to 79k): vmap is 1.2-12x
        faster per column than a loop of ``matvec`` for the untraced product, and for traced
        ones below ``VMAP_MAX_WORK`` samples x D; above it the traced product is already
        matmul-bound and vmap's batched kernels ran 15-20% slower, so columns are looped.
        """
        if matrix.dim() != 2 or matrix.shape[0] != self.dim:
            raise ValueError(f"expected a matrix of shape ({self.dim}, k), got {matrix.shape}")
        matrix = matrix.to(self.device, self.dtype)
        columns = matrix.shape[1]
        with torch.no_grad():
            if self.streamed:
                return self._streamed_matmat(matrix)
            if columns == 1 or not self._vmap_columns:
                return torch.stack([self._matvec_impl(c) for c in matrix.T], dim=1)
            batched = vmap(self._matvec_impl, in_dims=1, out_dims=1)
            step = self._columns_per_call
            blocks = [batched(matrix[:, s : s + step]) for s in range(0, columns, step)]
        return torch.cat(blocks, dim=1)

    def _streamed_matmat(self, matrix: Tensor) -> Tensor:
        """``H V`` reading the data once: per batch, all columns (vmapped in blocks).

        The batches are read outside ``vmap`` (a ``DataLoader`` draws random seeds when it
        starts, which ``vmap`` refuses), and once per product rather than once per column.
        """
        step = self._columns_per_call
        total = torch.zeros_like(matrix)
        with eval_mode(self.model, self.eval_mode):
            for chunk in self._iter_chunks():
                g = self._chunk_grad(chunk)

                def hvp(v: Tensor, g: Callable[[Tensor], Tensor] = g) -> Tensor:
                    return self._hvp(g, v)

                batched = vmap(hvp, in_dims=1, out_dims=1)
                for s in range(0, matrix.shape[1], step):
                    total[:, s : s + step] += batched(matrix[:, s : s + step])
        return total / self.num_samples

    def dense(self) -> Tensor:
        """The ``(D, D)`` matrix ``H``, from ``D`` products with the basis vectors (symmetrised).

        Raises ``ValueError`` above ``DENSE_MAX_DIM``.
        """
        if self.dim > DENSE_MAX_DIM:
            raise ValueError(
                f"refusing a dense {self.dim} x {self.dim} Hessian (> {DENSE_MAX_DIM})"
            )
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        step = max(1, self._columns_per_call)
        full = torch.cat([self.matmat(eye[:, s : s + step]) for s in range(0, self.dim, step)], 1)
        return 0.5 * (full + full.T)

    def __matmul__(self, other: Tensor) -> Tensor:
        return self.matvec(other) if other.dim() == 1 else self.matmat(other)

    def to_scipy(self) -> LinearOperator:
        """A SciPy ``LinearOperator`` with float64 numpy input and output (for ``eigsh``)."""

        def apply(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            v = torch.from_numpy(np.ascontiguousarray(x))
            out = self.matvec(v.reshape(-1)) if x.ndim == 1 or x.shape[1] == 1 else self.matmat(v)
            return out.detach().to("cpu", torch.float64).numpy().reshape(x.shape)

        return LinearOperator(
            self.shape, matvec=apply, rmatvec=apply, matmat=apply, dtype=np.float64
        )

    def __repr__(self) -> str:
        return (
            f"HessianOperator(D={self.dim}, samples={self._num_samples}, dtype={self.dtype}, "
            f"device={self.device}, linearized={self.linearized}, streamed={self.streamed})"
        )
