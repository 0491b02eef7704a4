"""Either end of the Hessian spectrum by Lanczos (ARPACK's ``eigsh``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor, nn

from lossatlas.data.batches import BatchAdapter
from lossatlas.errors import LossAtlasError
from lossatlas.evaluate import LossFn
from lossatlas.params import Wrt
from lossatlas.probes.curvature.operator import HessianOperator
from lossatlas.seeding import make_generator

__all__ = ["Which", "hessian_eigenpairs", "hessian_eigenvalues"]


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


Which = Literal["LA", "SA", "LM", "BE"]
"""Which end of the spectrum: ``"LA"`` largest (algebraic), ``"SA"`` smallest (the most
negative), ``"LM"`` largest magnitude, ``"BE"`` both ends (``k // 2`` from the bottom and
``k - k // 2`` from the top). The smallest *magnitudes* (ARPACK's ``"SM"``) are left out: they
sit inside the spectrum, where plain Lanczos converges very slowly (a near-null space of many
eigenvalues at ~0 is typical of networks), and shift-invert would need solves with ``H``."""

_ORDER: dict[str, str] = {
    "LA": "descending",
    "SA": "ascending",
    "LM": "magnitude descending",
    "BE": "descending",
}


def hessian_eigenpairs(
    model: nn.Module,
    data: Any,
    *,
    k: int = 20,
    which: Which = "LA",
    params: Tensor | None = None,
    wrt: Wrt = None,
    tol: float = 1e-4,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int = 4096,
    generator: torch.Generator | None = None,
    ncv: int | None = None,
    maxiter: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``k`` Hessian eigenvalues at one end of the spectrum, and their eigenvectors.

    Implicitly restarted Lanczos (ARPACK ``eigsh``) on :meth:`HessianOperator.to_scipy`.
    ``tol`` is ARPACK's relative residual tolerance; the eigenvalue error is typically far
    smaller (about ``tol^2 x |lambda| / gap``).

    Args:
        k: number of eigenpairs, ``1 <= k < D``.
        which: ``"LA"`` (largest, the default), ``"SA"`` (smallest: the most negative
            curvature), ``"LM"`` (largest magnitude) or ``"BE"`` (both ends); see
            :data:`Which`.
        wrt: which parameters span the space (see :class:`~lossatlas.ParamSpace`).
        adapter: how batches are read and scored (see :class:`~lossatlas.BatchAdapter`).
        generator: draws Lanczos' start vector (default: a fixed seed, so runs repeat).
        ncv: Lanczos basis size (ARPACK default ``max(2k + 1, 20)``); maxiter: restarts cap.

    Returns:
        ``(values (k,), vectors (k, D))`` in the operator's dtype and on its device; values
        ordered from the requested end inward (``LA``/``BE``: descending, ``SA``: ascending,
        ``LM``: by descending magnitude), vectors unit-norm
        rows (usable directly as surface directions).
    """
    op = HessianOperator(
        model,
        data,
        params=params,
        wrt=wrt,
        loss_fn=loss_fn,
        adapter=adapter,
        buffers=buffers,
        batch_size=batch_size,
    )
    values, vectors = _eigen(
        op, k, which=which, tol=tol, generator=generator, ncv=ncv, maxiter=maxiter
    )
    assert vectors is not None
    return values, vectors


def hessian_eigenvalues(
    model: nn.Module,
    data: Any,
    *,
    k: int = 20,
    which: Which = "LA",
    params: Tensor | None = None,
    wrt: Wrt = None,
    tol: float = 1e-4,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    buffers: Mapping[str, Tensor] | None = None,
    batch_size: int = 4096,
    generator: torch.Generator | None = None,
    ncv: int | None = None,
    maxiter: int | None = None,
) -> Tensor:
    """``k`` Hessian eigenvalues at one end of the spectrum, ``(k,)`` (default: the largest,
    descending).

    See :func:`hessian_eigenpairs` for the method, ``which`` and the order of the values.
    """
    op = HessianOperator(
        model,
        data,
        params=params,
        wrt=wrt,
        loss_fn=loss_fn,
        adapter=adapter,
        buffers=buffers,
        batch_size=batch_size,
    )
    values, _ = _eigen(
        op,
        k,
        which=which,
        tol=tol,
        generator=generator,
        ncv=ncv,
        maxiter=maxiter,
        vectors=False,
    )
    return values


def _order(values: np.ndarray, which: str) -> np.ndarray:
    """Indices that sort ``values`` from the requested end inward."""
    if which in ("LA", "BE"):
        return np.argsort(values)[::-1]
    if which == "SA":
        return np.argsort(values)
    return np.argsort(np.abs(values))[::-1]  # "LM"


def _eigen(
    op: HessianOperator,
    k: int,
    *,
    which: str = "LA",
    tol: float,
    generator: torch.Generator | None,
    ncv: int | None,
    maxiter: int | None,
    vectors: bool = True,
) -> tuple[Tensor, Tensor | None]:
    if which not in _ORDER:
        raise ValueError(f"unknown which '{which}' (use one of {', '.join(_ORDER)})")
    if not 1 <= k < op.dim:
        raise ValueError(f"k must satisfy 1 <= k < D={op.dim}, got {k}")
    if which == "BE" and k < 2:
        raise ValueError("which='BE' needs k >= 2 (one eigenvalue from each end)")
    generator = generator or make_generator(0, "lanczos-start")
    # ARPACK would otherwise draw its start vector from its own internal RNG.
    v0 = torch.randn(op.dim, generator=generator, device=generator.device, dtype=torch.float64)
    try:
        with _single_threaded_scipy_blas():
            result = eigsh(
                op.to_scipy(),
                k=k,
                which=which,
                tol=tol,
                v0=v0.cpu().numpy(),
                ncv=ncv,
                maxiter=maxiter,
                return_eigenvectors=vectors,
            )
    except ArpackNoConvergence as err:
        raise LossAtlasError(
            f"Lanczos did not converge to tol={tol} for k={k}, which={which} (got "
            f"{len(err.eigenvalues)}): loosen tol, raise maxiter or ncv, or use float64 parameters"
        ) from err
    values = result[0] if vectors else result
    order = _order(values, which)
    out = torch.from_numpy(values[order].copy()).to(op.device, op.dtype)
    if not vectors:
        return out, None
    vecs = torch.from_numpy(result[1][:, order].T.copy()).to(op.device, op.dtype)
    return out, vecs / vecs.norm(dim=1, keepdim=True)
