"""The top of the Hessian spectrum by Lanczos (ARPACK's ``eigsh``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor, nn

from lossatlas.errors import LossAtlasError
from lossatlas.evaluate import LossFn
from lossatlas.probes.curvature.operator import HessianOperator
from lossatlas.seeding import make_generator

__all__ = ["hessian_eigenpairs", "hessian_eigenvalues"]


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
