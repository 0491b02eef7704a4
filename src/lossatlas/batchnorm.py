"""BatchNorm statistics at points that were never trained on (averages, jumps, grid points).

The running statistics stored with a network describe the activations at *its* weights. At any
other point (an SWA average, a jump, a point of a surface) they have to be accumulated afresh on
training inputs; this module is the one implementation of that, shared by the populations and
the probes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lossatlas.params import ParamSpace

__all__ = ["bn_batches", "norm_modules", "recompute_bn", "recompute_bn_statistics"]


def norm_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module of every normalisation layer that tracks running statistics."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._NormBase)
        and module.track_running_stats
        and module.running_mean is not None
    }


def bn_batches(bn_data: Any) -> list[Tensor]:
    """The input batches of ``bn_data``: a tensor or an ``(X,)``/``(X, y)`` tuple is one batch,
    any other iterable (a DataLoader) yields batches that are tensors or tuples ``(x, ...)``."""
    if isinstance(bn_data, Tensor):
        return [bn_data]
    if isinstance(bn_data, (tuple, list)) and bn_data and isinstance(bn_data[0], Tensor):
        if len(bn_data) > 2:
            raise ValueError("bn_data as a tuple must be (X,) or (X, y)")
        return [bn_data[0]]
    if not isinstance(bn_data, Iterable):
        raise TypeError("bn_data must be a tensor, an (X,) tuple or a DataLoader")
    batches = [b[0] if isinstance(b, (tuple, list)) else b for b in bn_data]
    if not batches or not all(isinstance(b, Tensor) for b in batches):
        raise ValueError("bn_data yielded no input tensors")
    return batches


@torch.no_grad()
def recompute_bn_statistics(
    space: ParamSpace,
    thetas: Tensor,
    batches: Sequence[Tensor],
    template: Mapping[str, Tensor],
    *,
    vectorise: bool = False,
) -> dict[str, Tensor]:
    """Buffers for each point with normalisation statistics accumulated afresh over ``batches``.

    For every point, each layer of :func:`norm_modules` starts from reset statistics (mean 0,
    variance 1, no batches tracked) and accumulates the cumulative average over the batches, in
    train mode; every other layer stays in eval mode, so dropout is off and the result is
    deterministic. The module's train/eval flags and momenta are restored afterwards. This is
    the one implementation behind the subspace probes' ``bn_data`` and
    :func:`recompute_bn` (SWA averages, jump points).

    Args:
        space: the model's parameter space; ``space.model`` is used as a stateless template.
        thetas: ``(P, D)`` points.
        batches: ``(N_b, *input)`` input batches, in the points' dtype and device.
        template: name -> ``(*shape)`` every buffer of the module; the non-statistics buffers
            (and the dtype of all) are taken from it.
        vectorise: ``vmap`` over the points (one pass per batch for all of them) instead of a
            loop over points (one pass per batch and point).

    Returns:
        name -> ``(P, *shape)`` fresh tensors for every buffer of ``template``.
    """
    norms = norm_modules(space.model)
    fresh = _fresh_buffers(template, norms, thetas.shape[0])
    if not norms:
        return fresh
    fixed = space.fixed(thetas)  # parameters outside the space (frozen ones), as constants
    with _accumulating(space.model, norms):
        if vectorise:
            _accumulate(
                space.model,
                norms,
                space.unflatten(thetas),
                fresh,
                batches,
                batched=True,
                fixed=fixed,
            )
        else:
            for i in range(thetas.shape[0]):
                # Views into ``fresh``: the forward pass writes row i in place.
                one = {name: buf[i] for name, buf in fresh.items()}
                _accumulate(
                    space.model, norms, space.unflatten(thetas[i]), one, batches, fixed=fixed
                )
    return fresh


@contextmanager
def _accumulating(model: nn.Module, norms: Mapping[str, nn.Module]) -> Iterator[None]:
    """Eval mode but for ``norms`` (train mode) while inside; then every flag and momentum back."""
    flags = {module: module.training for module in model.modules()}
    momenta = {module: module.momentum for module in norms.values()}
    model.eval()
    for module in norms.values():
        module.train()
    try:
        yield
    finally:
        for module, training in flags.items():
            module.training = training
        for module, momentum in momenta.items():
            module.momentum = momentum


def _accumulate(
    model: nn.Module,
    norms: Mapping[str, nn.Module],
    named: dict[str, Tensor],
    buffers: dict[str, Tensor],
    batches: Sequence[Tensor],
    *,
    batched: bool = False,
    fixed: Mapping[str, Tensor] | None = None,
) -> None:
    """Run every batch through ``model`` at ``named``, updating ``buffers`` in place.

    ``named``/``buffers`` hold one point (``(*shape)``), or ``(P, *shape)`` when ``batched``;
    ``fixed`` holds the parameters that are not in the space (never batched).
    """
    constants = dict(fixed or {})

    def forward(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor) -> Tensor:
        return functional_call(model, ({**constants, **p}, b), (xb,), strict=True)

    call = vmap(forward, in_dims=(0, 0, None)) if batched else forward
    for t, xb in enumerate(batches, start=1):
        # momentum = 1/t is exactly the cumulative average that momentum=None computes
        # (PyTorch uses 1 / num_batches_tracked, the same float), but it needs no .item(), so it
        # vmaps; and InstanceNorm, which reads momentum=None as 0, accumulates too.
        for module in norms.values():
            module.momentum = 1.0 / t  # type: ignore[assignment]  # _NormBase.momentum: float
        call(named, buffers, xb)


def _fresh_buffers(
    template: Mapping[str, Tensor], norms: Mapping[str, nn.Module], points: int
) -> dict[str, Tensor]:
    """``(points, *shape)`` buffers: reset statistics for norm layers, copies otherwise."""
    fresh = {}
    for name, buf in template.items():
        prefix, _, stat = name.rpartition(".")
        if prefix in norms and stat == "running_mean":
            fresh[name] = torch.zeros((points, *buf.shape), dtype=buf.dtype, device=buf.device)
        elif prefix in norms and stat == "running_var":
            fresh[name] = torch.ones((points, *buf.shape), dtype=buf.dtype, device=buf.device)
        elif prefix in norms and stat == "num_batches_tracked":
            fresh[name] = torch.zeros((points, *buf.shape), dtype=buf.dtype, device=buf.device)
        else:
            fresh[name] = buf.unsqueeze(0).expand(points, *buf.shape).clone()
    return fresh


def recompute_bn(
    space: ParamSpace,
    thetas: torch.Tensor,
    x: torch.Tensor,
    *,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Buffers for each point with BatchNorm statistics recomputed on the inputs ``x``.

    For every point, each normalisation layer that tracks running statistics starts from reset
    statistics and accumulates the cumulative average over ``x`` in batches of ``batch_size``
    (all of ``x`` at once by default), in train mode; every other layer stays in eval mode, so
    dropout is off and the result is deterministic (see
    :func:`recompute_bn_statistics`, which does the work). This is what
    SWA and any other point that was never trained on (an average of weights) need: the running
    statistics of the snapshots do not describe the activations at their average.

    Args:
        space: the model's parameter space; its module is used as a stateless template and its
            train/eval flags and BatchNorm momenta are restored.
        thetas: ``(B, D)`` points (or one ``(D,)`` point).
        x: ``(N, *input)`` inputs (labels are not needed).
        batch_size: samples per forward pass.

    Returns:
        name -> ``(B, *shape)`` for every buffer of the module (buffers of other layers are
        copies of the module's), ready for ``predict_points(..., buffers_batched=True)``.
    """
    points = thetas.reshape(1, -1) if thetas.dim() == 1 else thetas
    step = batch_size or x.shape[0]
    batches = [x[start : start + step] for start in range(0, x.shape[0], step)]
    # One point at a time (no vmap), as this has always run: the statistics stay bit-identical.
    return recompute_bn_statistics(space, points, batches, space.buffers())
