"""Curvature of the training loss: Hessian-vector products, top eigenpairs, trace, density, counts.

Everything here works on any ``nn.Module`` plus data, and treats the Hessian as a linear
operator that is never formed (except by :func:`dense_hessian`, the exact reference for small
models):

* :class:`HessianOperator` - ``H v`` by forward-over-reverse differentiation, with a SciPy view.
* :func:`hessian_eigenvalues` / :func:`hessian_eigenpairs` - top of the spectrum by Lanczos
  (ARPACK's ``eigsh``).
* :func:`hessian_trace` - Hutch++ (Meyer et al. 2021).
* :func:`spectral_density` - stochastic Lanczos quadrature (Ghorbani et al. 2019), returning a
  :class:`SpectralDensity`.
* :func:`count_above` - the number of eigenvalues above curvature thresholds: Fort &
  Jastrzebski's "short directions" (paper A, Fig. 4).

Conventions shared by all of them:

* ``data`` is an ``(X, y)`` pair of tensors, a ``DataLoader`` (read once into memory) or a
  lossatlas ``Dataset`` (its train split).
* The loss is the mean of ``loss_fn`` (cross-entropy by default) over the *whole* data set. It
  is evaluated in sample chunks of ``batch_size`` to bound memory; each chunk's mean is weighted
  by its share of the samples, so the result equals the full-batch loss (for a mean-reduced
  ``loss_fn``) and is independent of ``batch_size``.
* The model is evaluated in **eval mode**: dropout is off and BatchNorm uses its running
  statistics (passed as ``buffers``, default the module's own), so the loss is a deterministic
  function of the parameters alone. The module's own train/eval flag is restored afterwards.
* ``params`` is a flat ``(D,)`` point (see :class:`lossatlas.ParamSpace`), default the module's
  current parameters. Its device and dtype decide where and in what precision everything runs:
  float32 by default, float64 when the parameters are float64. When ``params`` is not given and
  ``X`` lives on an accelerator, the computation follows ``X`` there.
* Random draws come from an explicit ``torch.Generator``; none touches global RNG state.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor, nn
from torch.func import grad, jvp, linearize, vmap

from lossatlas.errors import LossAtlasError
from lossatlas.evaluate import LossFn
from lossatlas.params import ParamSpace
from lossatlas.probes._hutch import Distribution, hutchpp, random_matrix
from lossatlas.probes._lanczos import gauss_quadrature, lanczos
from lossatlas.seeding import make_generator

__all__ = [
    "DENSE_MAX_DIM",
    "EXACT_MAX_DIM",
    "HessianOperator",
    "SpectralDensity",
    "count_above",
    "dense_hessian",
    "hessian_eigenpairs",
    "hessian_eigenvalues",
    "hessian_trace",
    "spectral_density",
]

# A dense D x D Hessian costs D Hessian-vector products and D^2 floats: 20000 is 1.6 GB in
# float32, the most a laptop should be asked to hold.
DENSE_MAX_DIM = 20_000
# count_above(method="auto") counts exactly up to this D. At D = 3000 the dense route is about
# 3000 HVPs plus an O(D^3) eigvalsh (seconds); SLQ's 8 x 80 = 640 HVPs win above it.
EXACT_MAX_DIM = 3_000
DEFAULT_THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.1)

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


# --------------------------------------------------------------------------- data


def _resolve_xy(data: Any) -> tuple[Tensor, Tensor]:
    """``(X, y)`` from a pair, a DataLoader (read once) or a lossatlas Dataset (train split)."""
    if hasattr(data, "x_train") and hasattr(data, "split"):
        return data.split("train")
    if isinstance(data, torch.utils.data.DataLoader):
        xs, ys = zip(*[(xb, yb) for xb, yb in data], strict=True)
        return torch.cat(xs), torch.cat(ys)
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be an (X, y) pair of tensors, a DataLoader or a Dataset")
    x, y = (torch.as_tensor(t) for t in data)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X has {x.shape[0]} samples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("data has no samples")
    return x, y


@contextlib.contextmanager
def _eval_mode(model: nn.Module, enabled: bool) -> Iterator[None]:
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


@contextlib.contextmanager
def _single_threaded_scipy_blas() -> Iterator[None]:
    """Run SciPy's BLAS (ARPACK's) on one thread while torch computes the products.

    ARPACK's own work is O(D x ncv) per step, negligible, but OpenBLAS' idle worker threads
    busy-wait after each call and steal the cores torch's next product needs: measured 2.3x
    slower eigsh on 2 CPU cores. BLAS libraries that torch itself loaded are left alone.
    """
    try:
        from threadpoolctl import ThreadpoolController  # shipped with scikit-learn
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        yield
        return
    controller = ThreadpoolController()
    torch_dir = os.path.dirname(os.path.realpath(torch.__file__))
    paths = [
        info["filepath"]
        for info in controller.info()
        if info["user_api"] == "blas"
        and not os.path.realpath(info["filepath"]).startswith(torch_dir)
    ]
    if not paths:
        yield
        return
    with controller.select(filepath=paths).limit(limits=1):
        yield


def _sum(terms: Iterator[Tensor]) -> Tensor:
    # Out-of-place, so it also works on vmap's batched tensors.
    total = next(terms)
    for term in terms:
        total = total + term
    return total


# --------------------------------------------------------------------------- the operator


class HessianOperator:
    """The Hessian of the mean training loss at one point, as a ``D x D`` linear operator.

    ``H v`` is computed forward-over-reverse, ``jvp(grad(loss), (theta,), (v,))``: one forward
    and one backward pass, each carrying a tangent, about 2-3 gradient evaluations and no
    second backward graph. The loss is summed over sample chunks (see the module docstring).

    Args:
        model: any ``nn.Module``; used as a stateless template (its parameters are not changed).
        data: ``(X, y)`` tensors, a ``DataLoader`` or a lossatlas ``Dataset`` (train split).
        params: ``(D,)`` point at which the Hessian is taken; default the module's parameters.
        loss_fn: ``loss(logits (n, C), y (n,)) -> mean``; default cross-entropy.
        buffers: name -> tensor (BatchNorm statistics); default a copy of the module's.
        batch_size: samples per chunk; bounds activation memory, not the result.
        check_deterministic: apply the operator twice to one random vector on construction and
            raise :class:`~lossatlas.LossAtlasError` if the results differ, which catches
            dropout left on (``eval_mode=False``) or a nondeterministic ``loss_fn``.
        eval_mode: evaluate the module in eval mode (the default). ``False`` keeps the module's
            own flags, e.g. to study BatchNorm with batch statistics.
        linearize: trace the primal computation once with ``torch.func.linearize`` and reuse it
            for every product (about 2x faster, memory of one full forward+backward held).
            ``None`` decides: on when all samples fit one chunk and samples x D is at least
            ``LINEARIZE_MIN_WORK``.

    Attributes:
        shape: ``(D, D)``. dim: ``D``. dtype, device: those of ``params``.
        params: the ``(D,)`` point. space: its :class:`~lossatlas.ParamSpace`.
        num_samples: samples in the loss. linearized: whether the traced path is in use.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        params: Tensor | None = None,
        loss_fn: LossFn | None = None,
        buffers: Mapping[str, Tensor] | None = None,
        batch_size: int = 4096,
        check_deterministic: bool = True,
        eval_mode: bool = True,
        linearize: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        _load_forward_ad()
        self.space = ParamSpace(model)
        self.model = model
        self.eval_mode = eval_mode
        x, y = _resolve_xy(data)
        if params is None:
            theta = self.space.flatten()
            if x.device.type != "cpu":  # data on an accelerator: follow it there
                theta = theta.to(x.device)
        else:
            theta = params.detach()
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
        x = x.to(self.device, dtype=self.dtype if x.is_floating_point() else None)
        y = y.to(self.device)
        self.num_samples = int(x.shape[0])
        source = self.space.buffers() if buffers is None else dict(buffers)
        # Floating buffers follow the parameters' dtype, so float64 params work on a float32
        # module (BatchNorm refuses mixed dtypes).
        self.buffers = {
            name: b.detach().to(self.device, dtype=self.dtype if b.is_floating_point() else None)
            for name, b in source.items()
        }
        loss = loss_fn or F.cross_entropy
        # Each chunk's mean loss is weighted by its share of the samples: the weighted sum is
        # the full-data mean, whatever the chunking.
        self._grads = [
            self._chunk_grad(loss, x[s : s + batch_size], y[s : s + batch_size])
            for s in range(0, self.num_samples, batch_size)
        ]
        # vmap over v: as many columns per call as keep (columns x chunk samples) bounded.
        self._columns_per_call = max(1, MATMAT_SAMPLE_COLUMNS // min(batch_size, self.num_samples))
        self._linear: list[Callable[[Tensor], Tensor]] | None = None
        single_chunk = len(self._grads) == 1
        if linearize is None:
            linearize = single_chunk and self.num_samples * self.dim >= LINEARIZE_MIN_WORK
        reference = None
        if check_deterministic:
            probe = torch.randn(self.dim, generator=torch.Generator().manual_seed(0))
            reference = self._jvp_matvec(probe.to(self.device, self.dtype))
        if linearize:
            self._linear = self._linearize()
        self.linearized = self._linear is not None
        chunk_work = min(batch_size, self.num_samples) * self.dim
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

    # ------------------------------------------------------------------ construction helpers

    def _chunk_grad(self, loss: LossFn, xs: Tensor, ys: Tensor) -> Callable[[Tensor], Tensor]:
        weight = xs.shape[0] / self.num_samples
        space, buffers = self.space, self.buffers

        def chunk_loss(theta: Tensor) -> Tensor:
            return loss(space.forward(theta, xs, buffers), ys) * weight

        return grad(chunk_loss)

    def _linearize(self) -> list[Callable[[Tensor], Tensor]]:
        traced = []
        with _eval_mode(self.model, self.eval_mode), warnings.catch_warnings():
            # torch's const-folding pass warns about an internal get_attr detail; harmless.
            warnings.filterwarnings("ignore", message=".*get_attr.*", category=UserWarning)
            for g in self._grads:
                _, fn = linearize(g, self.params)
                traced.append(fn)
        return traced

    # ------------------------------------------------------------------ products

    def _jvp_matvec(self, v: Tensor) -> Tensor:
        with _eval_mode(self.model, self.eval_mode):
            # Chunk contributions already carry their sample-share weights: just sum them.
            return _sum(jvp(g, (self.params,), (v,))[1] for g in self._grads)

    def _matvec_impl(self, v: Tensor) -> Tensor:
        if self._linear is None:
            return self._jvp_matvec(v)
        with _eval_mode(self.model, self.eval_mode):
            return _sum(fn(v) for fn in self._linear)

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
            if columns == 1 or not self._vmap_columns:
                return torch.stack([self._matvec_impl(c) for c in matrix.T], dim=1)
            batched = vmap(self._matvec_impl, in_dims=1, out_dims=1)
            step = self._columns_per_call
            blocks = [batched(matrix[:, s : s + step]) for s in range(0, columns, step)]
        return torch.cat(blocks, dim=1)

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
            f"HessianOperator(D={self.dim}, samples={self.num_samples}, dtype={self.dtype}, "
            f"device={self.device}, linearized={self.linearized})"
        )


# --------------------------------------------------------------------------- dense reference


def dense_hessian(
    model: nn.Module,
    data: Any,
    *,
    params: Tensor | None = None,
    loss_fn: LossFn | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """The exact ``(D, D)`` Hessian of the mean loss, via ``torch.func.hessian``.

    Independent of :class:`HessianOperator`'s code path, so it is the reference its tests
    compare against. Samples are processed in chunks (default: as many as keep
    ``D x chunk <= DENSE_SAMPLE_COLUMNS``, since ``torch.func.hessian`` vmaps over all ``D``
    basis vectors at once), weighted by their share of the samples.

    Raises:
        ValueError: if ``D > DENSE_MAX_DIM`` (use the operator-based functions instead).
    """
    space = ParamSpace(model)
    if space.dim > DENSE_MAX_DIM:
        raise ValueError(
            f"dense_hessian refuses D={space.dim} > {DENSE_MAX_DIM} (a D x D matrix); use "
            "hessian_eigenvalues, spectral_density or count_above(method='slq') instead"
        )
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
    x, y = _resolve_xy(data)
    x = x.to(op.device, dtype=op.dtype if x.is_floating_point() else None)
    y = y.to(op.device)
    chunk = batch_size or max(1, DENSE_SAMPLE_COLUMNS // space.dim)
    loss = loss_fn or F.cross_entropy
    total = torch.zeros(op.shape, dtype=op.dtype, device=op.device)
    with _eval_mode(model, True), torch.no_grad():
        for s in range(0, op.num_samples, chunk):
            xs, ys = x[s : s + chunk], y[s : s + chunk]
            weight = xs.shape[0] / op.num_samples

            def chunk_loss(theta: Tensor, xs: Tensor = xs, ys: Tensor = ys) -> Tensor:
                return loss(space.forward(theta, xs, op.buffers), ys)

            total += torch.func.hessian(chunk_loss)(op.params) * weight
    return total


# --------------------------------------------------------------------------- top eigenpairs


def hessian_eigenpairs(
    model: nn.Module,
    data: Any,
    *,
    k: int = 20,
    params: Tensor | None = None,
    tol: float = 1e-4,
    loss_fn: LossFn | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int = 4096,
    generator: torch.Generator | None = None,
    ncv: int | None = None,
    maxiter: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``k`` largest (algebraic) Hessian eigenvalues and their eigenvectors.

    Implicitly restarted Lanczos (ARPACK ``eigsh``, ``which="LA"``) on
    :meth:`HessianOperator.to_scipy`. ``tol`` is ARPACK's relative residual tolerance; the
    eigenvalue error is typically far smaller (about ``tol^2 x |lambda| / gap``).

    Args:
        k: number of eigenpairs, ``1 <= k < D``.
        generator: draws Lanczos' start vector (default: a fixed seed, so runs repeat).
        ncv: Lanczos basis size (ARPACK default ``max(2k + 1, 20)``); maxiter: restarts cap.

    Returns:
        ``(values (k,), vectors (k, D))``, values descending, vectors unit-norm rows (usable
        directly as surface directions), in the operator's dtype and on its device.
    """
    op = HessianOperator(
        model, data, params=params, loss_fn=loss_fn, buffers=buffers, batch_size=batch_size
    )
    values, vectors = _top_eigen(op, k, tol=tol, generator=generator, ncv=ncv, maxiter=maxiter)
    assert vectors is not None
    return values, vectors


def hessian_eigenvalues(
    model: nn.Module,
    data: Any,
    *,
    k: int = 20,
    params: Tensor | None = None,
    tol: float = 1e-4,
    loss_fn: LossFn | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int = 4096,
    generator: torch.Generator | None = None,
    ncv: int | None = None,
    maxiter: int | None = None,
) -> Tensor:
    """The ``k`` largest (algebraic) Hessian eigenvalues, ``(k,)`` descending.

    See :func:`hessian_eigenpairs` for the method and arguments.
    """
    op = HessianOperator(
        model, data, params=params, loss_fn=loss_fn, buffers=buffers, batch_size=batch_size
    )
    values, _ = _top_eigen(
        op, k, tol=tol, generator=generator, ncv=ncv, maxiter=maxiter, vectors=False
    )
    return values


def _top_eigen(
    op: HessianOperator,
    k: int,
    *,
    tol: float,
    generator: torch.Generator | None,
    ncv: int | None,
    maxiter: int | None,
    vectors: bool = True,
) -> tuple[Tensor, Tensor | None]:
    if not 1 <= k < op.dim:
        raise ValueError(f"k must satisfy 1 <= k < D={op.dim}, got {k}")
    generator = generator or make_generator(0, "lanczos-start")
    # ARPACK would otherwise draw its start vector from its own internal RNG.
    v0 = torch.randn(op.dim, generator=generator, device=generator.device, dtype=torch.float64)
    try:
        with _single_threaded_scipy_blas():
            result = eigsh(
                op.to_scipy(),
                k=k,
                which="LA",
                tol=tol,
                v0=v0.cpu().numpy(),
                ncv=ncv,
                maxiter=maxiter,
                return_eigenvectors=vectors,
            )
    except ArpackNoConvergence as err:
        raise LossAtlasError(
            f"Lanczos did not converge to tol={tol} for k={k} (got {len(err.eigenvalues)}): "
            "loosen tol, raise maxiter or ncv, or use float64 parameters"
        ) from err
    values = result[0] if vectors else result
    order = np.argsort(values)[::-1]
    out = torch.from_numpy(values[order].copy()).to(op.device, op.dtype)
    if not vectors:
        return out, None
    vecs = torch.from_numpy(result[1][:, order].T.copy()).to(op.device, op.dtype)
    return out, vecs / vecs.norm(dim=1, keepdim=True)


# --------------------------------------------------------------------------- trace


def hessian_trace(
    model: nn.Module,
    data: Any,
    *,
    generator: torch.Generator,
    params: Tensor | None = None,
    num_matvecs: int = 60,
    loss_fn: LossFn | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int = 4096,
    distribution: Distribution = "rademacher",
) -> float:
    """``tr(H)`` by Hutch++ (Meyer et al. 2021) with ``num_matvecs`` Hessian-vector products.

    Unbiased; its error falls like ``1/num_matvecs`` when the spectrum decays (Hutchinson's
    like ``1/sqrt(num_matvecs)``). When ``num_matvecs >= D`` the trace is computed exactly
    from ``H e_i`` for all ``D`` basis vectors, which costs no more.

    Args:
        generator: the only source of randomness (same seed, same estimate).
        num_matvecs: products to spend, at least 3.
        distribution: ``"rademacher"`` (lower variance) or ``"normal"`` probe entries.
    """
    if num_matvecs < 3:
        raise ValueError(f"num_matvecs must be at least 3, got {num_matvecs}")
    op = HessianOperator(
        model, data, params=params, loss_fn=loss_fn, buffers=buffers, batch_size=batch_size
    )
    if num_matvecs >= op.dim:
        return float(_exact_trace(op))
    estimate = hutchpp(
        op.matmat,
        op.dim,
        num_matvecs,
        generator,
        dtype=op.dtype,
        device=op.device,
        distribution=distribution,
    )
    return float(estimate)


def _exact_trace(op: HessianOperator) -> Tensor:
    total = torch.zeros((), dtype=op.dtype, device=op.device)
    step = max(op._columns_per_call, 1)
    for s in range(0, op.dim, step):
        cols = torch.arange(s, min(s + step, op.dim), device=op.device)
        basis = torch.zeros(op.dim, cols.numel(), dtype=op.dtype, device=op.device)
        basis[cols, torch.arange(cols.numel(), device=op.device)] = 1
        total += op.matmat(basis)[cols, torch.arange(cols.numel(), device=op.device)].sum()
    return total


# --------------------------------------------------------------------------- density


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """A stochastic Lanczos quadrature estimate of the Hessian's eigenvalue distribution.

    Each probe ``p`` gives a Gauss quadrature rule: ``nodes[p]`` (Ritz values) and
    ``weights[p]`` (squared first components of ``T_p``'s eigenvectors, summing to 1). The
    spectral measure ``(1/D) sum_i delta(t - lambda_i)`` is estimated by the average over
    probes of ``sum_j weights[p, j] delta(t - nodes[p, j])``; for any ``f``,
    ``mean_p sum_j w_pj f(nodes_pj)`` estimates ``tr f(H) / D``.

    Attributes:
        nodes: ``(P, m)`` float64. weights: ``(P, m)`` float64, rows sum to 1.
        dim: ``D``, to turn fractions into counts.
    """

    nodes: Tensor
    weights: Tensor
    dim: int

    @property
    def num_probes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def steps(self) -> int:
        return int(self.nodes.shape[1])

    def moment(self, power: int) -> float:
        """Estimate of ``tr(H^power) / D`` (``power = 0`` gives 1, ``1`` the mean eigenvalue)."""
        return float((self.weights * self.nodes**power).sum(dim=1).mean())

    def mass_above(self, threshold: float) -> float:
        """Estimated fraction of the ``D`` eigenvalues strictly above ``threshold``.

        This is Hutchinson's estimator of ``tr(1[H > t]) / D`` with each probe's quadratic form
        replaced by its Gauss quadrature. Two errors add up:

        * Monte Carlo: for Rademacher probes the variance of ``D x`` the estimate is at most
          ``2 r / P`` for ``r`` eigenvalues above the threshold and ``P`` probes.
        * Quadrature: a step function is not a polynomial. A node near the threshold moves all
          its weight to one side; that matters when many eigenvalues crowd the threshold and
          the nodes are few. Measured at D = 394-850: <= 1% of D on trained MLPs (where the
          thresholds sit in the sparse tail), up to 13% of D on untrained ones with 80 steps
          (2.5% with 160).
        """
        return float((self.weights * (self.nodes > threshold)).sum(dim=1).mean())

    def count_above(self, threshold: float) -> float:
        """``D x mass_above(threshold)``: the estimated number of eigenvalues above it."""
        return self.dim * self.mass_above(threshold)

    def density(self, grid: Tensor | np.ndarray | Sequence[float], sigma: float) -> Tensor:
        """The spectrum smoothed with a Gaussian of width ``sigma``, evaluated on ``grid``.

        Args:
            grid: ``(G,)`` increasing eigenvalue positions; should cover the spectrum.
            sigma: kernel width (in eigenvalue units), > 0.

        Returns:
            ``(G,)`` float64, normalised so that its trapezoid integral over ``grid`` is 1
            (as PyHessian does; a grid that cuts off part of the spectrum inflates the rest).
        """
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        t = torch.as_tensor(np.asarray(grid, dtype=np.float64)).reshape(-1)
        z = (t[:, None, None] - self.nodes[None]) / sigma  # (G, P, m)
        kernel = torch.exp(-0.5 * z**2) / (sigma * (2 * torch.pi) ** 0.5)
        values = (kernel * self.weights[None]).sum(dim=2).mean(dim=1)
        area = torch.trapezoid(values, t)
        if not float(area) > 0:
            raise ValueError("the grid does not cover the spectrum (the density is 0 on it)")
        return values / area


def spectral_density(
    model: nn.Module,
    data: Any,
    *,
    generator: torch.Generator,
    params: Tensor | None = None,
    num_probes: int = 8,
    lanczos_steps: int = 80,
    loss_fn: LossFn | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int = 4096,
    distribution: Distribution = "rademacher",
) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019; PyHessian's ``density``).

    From each of ``num_probes`` random start vectors (Rademacher by default), run
    ``lanczos_steps`` Lanczos steps with full reorthogonalisation; the Ritz values are the
    quadrature nodes and the squared first components of ``T``'s eigenvectors the weights.
    Probes run in lock-step, so each step is one vectorised :meth:`HessianOperator.matmat`.
    Costs ``num_probes x min(lanczos_steps, D)`` Hessian-vector products.

    Args:
        generator: the only source of randomness (same seed, same density).
    """
    if num_probes < 1 or lanczos_steps < 1:
        raise ValueError("num_probes and lanczos_steps must be positive")
    op = HessianOperator(
        model, data, params=params, loss_fn=loss_fn, buffers=buffers, batch_size=batch_size
    )
    return _slq(op, num_probes, lanczos_steps, generator, distribution)


def _slq(
    op: HessianOperator,
    num_probes: int,
    lanczos_steps: int,
    generator: torch.Generator,
    distribution: Distribution,
) -> SpectralDensity:
    starts = random_matrix(
        op.dim, num_probes, generator, dtype=op.dtype, device=op.device, distribution=distribution
    )
    steps = min(lanczos_steps, op.dim)
    itemsize = torch.finfo(op.dtype).bits // 8
    group = max(1, LANCZOS_BASIS_BYTES // (steps * op.dim * itemsize))
    nodes, weights = [], []
    for s in range(0, num_probes, group):
        alpha, beta = lanczos(op.matmat, starts[:, s : s + group], steps, generator)
        n, w = gauss_quadrature(alpha, beta)
        nodes.append(n)
        weights.append(w)
    return SpectralDensity(torch.cat(nodes), torch.cat(weights), op.dim)


# --------------------------------------------------------------------------- short directions


def count_above(
    model: nn.Module,
    data: Any,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    params: Tensor | None = None,
    method: Literal["auto", "exact", "slq"] = "auto",
    generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int = 4096,
    num_probes: int = 8,
    lanczos_steps: int = 80,
) -> dict[float, float]:
    """Number of Hessian eigenvalues strictly above each threshold ("short directions").

    Fort & Jastrzebski (2019, Fig. 4) count eigenvalues above curvature thresholds such as
    0.01-0.1 without saying how. Two estimators:

    * ``"exact"``: ``eigvalsh`` of :func:`dense_hessian`; ``D`` products plus ``O(D^3)``.
    * ``"slq"``: ``D x SpectralDensity.mass_above(t)`` from :func:`spectral_density` with
      ``num_probes x lanczos_steps`` products. Its Monte-Carlo error has standard deviation
      at most ``sqrt(2 count / num_probes)`` eigenvalues; the Gauss quadrature of the step
      function adds a bias when many eigenvalues crowd the threshold (see
      :meth:`SpectralDensity.mass_above`; raise ``lanczos_steps`` there). The test suite
      checks it against the exact count on a trained model with D = 394.
    * ``"auto"``: exact when ``D <= EXACT_MAX_DIM``, else SLQ.

    Args:
        generator: SLQ's randomness (default: a fixed seed, so runs repeat).

    Returns:
        ``{threshold: count}``; counts are floats (SLQ's are not integers).
    """
    if method == "auto":
        method = "exact" if ParamSpace(model).dim <= EXACT_MAX_DIM else "slq"
    if method == "exact":
        hessian = dense_hessian(model, data, params=params, loss_fn=loss_fn, buffers=buffers)
        eigenvalues = torch.linalg.eigvalsh(hessian)
        return {float(t): float((eigenvalues > t).sum()) for t in thresholds}
    if method == "slq":
        op = HessianOperator(
            model, data, params=params, loss_fn=loss_fn, buffers=buffers, batch_size=batch_size
        )
        generator = generator or make_generator(0, "count-above")
        density = _slq(op, num_probes, lanczos_steps, generator, "rademacher")
        return {float(t): density.count_above(t) for t in thresholds}
    raise ValueError(f"unknown method '{method}' (use 'auto', 'exact' or 'slq')")
