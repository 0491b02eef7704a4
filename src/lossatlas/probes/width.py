"""Tunnel width: how far one can walk from a point along random directions before the loss rises.

For a point ``theta`` (D,) and ``K`` random directions, the width along direction ``u_k`` is the
distance ``t_k`` at which ``L(theta + t_k u_k)`` first passes a loss threshold; the tunnel width is
the mean over directions. Tracked against the weight norm ``R = |theta|`` during training it gives
the width-vs-R curve of the "large scale structure" paper (PAPERS.md A6).

Definitions (all fixed here so that numbers from different runs are comparable):

* **Distance norm.** Every direction is rescaled to unit Euclidean length in the full flat
  weight space, so a distance is the Euclidean distance ``|delta theta|`` over all ``D``
  parameters, in the same units as ``R``. ``direction_kind="filter"`` (Li et al. 2018) only
  changes the *shape* of a direction (filter-wise scales, zero on biases and other 1-D
  parameters) before that rescaling; the raw filter-normalised norm is kept in
  :attr:`TunnelWidth.direction_norms`, so ``distance / direction_norm`` converts a distance to
  Li et al.'s filter-normalised units.
* **Threshold.** ``threshold_mode`` says how ``threshold`` is read: ``"absolute"`` -> the loss
  level ``threshold`` itself; ``"additive"`` (default) -> ``base_loss + threshold``;
  ``"multiplicative"`` -> ``base_loss * (1 + threshold)``. The loss *passes* the threshold when
  it is strictly greater, or not finite (a diverged forward pass counts as passing).
* **First crossing.** The loss along a ray need not be monotone. The search evaluates every ray
  on one shared geometric grid ``t_j = initial_step * 2**(j / scan_steps)`` (the last point
  clipped to ``max_distance``) and takes the first grid interval ``(t_{j-1}, t_j]`` (with
  ``t_{-1} = 0``) whose right end passes the threshold. A bracketing root search inside that
  interval (Chandrupatla's method, :func:`scipy.optimize.elementwise.find_root`: inverse
  quadratic steps where the loss is smooth, halvings where it is not) then keeps the invariant
  "loss(lo) does not pass, loss(hi) passes", so it converges to a crossing inside the first
  passing interval (the first crossing whenever the loss crosses only once in it). Bumps
  narrower than the grid spacing can be missed; raise ``scan_steps`` to catch them.
* **Tolerance.** ``tol`` is *relative*: the search stops once ``hi - lo < tol * hi`` (or
  stricter) and reports the midpoint, so ``|reported - true| <= tol * true / (2 (1 - tol))``.
* **Censoring.** A ray whose loss never passes the threshold up to ``max_distance`` is
  *censored*: its distance is reported as ``max_distance`` (a lower bound) and flagged in
  :attr:`TunnelWidth.censored_mask`; ``mean`` and ``std`` include it at that value.

All ``K`` rays advance together: each scan or search step is one
:func:`~lossatlas.evaluate.evaluate_points` call on the rays still unresolved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.optimize.elementwise import find_root
from torch import nn

from lossatlas.data.batches import BatchAdapter, as_batches, resolve_adapter
from lossatlas.evaluate import Autocast, LossFn, evaluate_points, precision_error
from lossatlas.params import DirectionKind, ParamSpace, Wrt, check_point
from lossatlas.seeding import make_generator

__all__ = ["ThresholdMode", "TunnelWidth", "tunnel_width", "width_over_snapshots"]

ThresholdMode = Literal["absolute", "additive", "multiplicative"]

# A cap on the root search's iterations (64 halvings exhaust float64 resolution); it only
# binds in the degenerate case of a crossing at distance 0, where a relative tolerance never
# holds.
_MAX_ITERATIONS = 64


@dataclass(frozen=True)
class TunnelWidth:
    """Result of :func:`tunnel_width` at one point.

    Attributes:
        distances: ``(K,)`` Euclidean distance along each unit direction to the first threshold
            crossing; ``max_distance`` where censored.
        censored_mask: ``(K,)`` bool, True where the loss never passed the threshold within
            ``max_distance``.
        directions: ``(K, D)`` unit-length directions used, or None when not kept.
        direction_norms: ``(K,)`` Euclidean norm of each direction before it was rescaled to unit
            length (for ``"filter"`` directions: the filter-normalised norm).
        threshold: the absolute loss level used.
        threshold_mode: how the ``threshold`` argument was read.
        base_loss: loss at the point itself.
        weight_norm: ``R = |theta|``, Euclidean norm of the flat parameter vector.
        mean: mean of ``distances`` (censored rays counted at ``max_distance``).
        std: sample standard deviation of ``distances`` (0 for a single direction).
        censored: number of censored rays.
        max_distance: the search limit.
        direction_kind: ``"gaussian"``, ``"filter"`` or ``"given"`` (explicit directions).
        tol: the relative tolerance of the root search.
        evaluations: number of loss evaluations spent (points, base point included).
        autocast_error: with ``autocast``, the loss error against full precision at the base
            point and at each ray's distance (``max_abs_error``, ``max_rel_error``,
            ``checked_points``); ``None`` without autocast.
    """

    distances: torch.Tensor
    censored_mask: torch.Tensor
    directions: torch.Tensor | None
    direction_norms: torch.Tensor
    threshold: float
    threshold_mode: ThresholdMode
    base_loss: float
    weight_norm: float
    mean: float
    std: float
    censored: int
    max_distance: float
    direction_kind: str
    tol: float
    evaluations: int
    autocast_error: dict[str, float] | None = None


def tunnel_width(
    model: nn.Module,
    data: Any,
    *,
    params: torch.Tensor | None = None,
    n_directions: int = 32,
    threshold: float = 0.1,
    threshold_mode: ThresholdMode = "additive",
    direction_kind: DirectionKind = "gaussian",
    directions: torch.Tensor | None = None,
    max_distance: float = 100.0,
    initial_step: float = 0.01,
    scan_steps: int = 1,
    tol: float = 1e-3,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    wrt: Wrt = None,
    split: str = "train",
    buffers: Mapping[str, torch.Tensor] | None = None,
    keep_directions: bool = True,
    sample_chunk: int = 2048,
    point_chunk: int | None = None,
    autocast: Autocast = None,
) -> TunnelWidth:
    """Tunnel width of ``model`` at ``params`` on one data split.

    Args:
        model: any ``nn.Module``; used as a stateless template (its parameters are not changed).
        data: ``(X, y)``, a ``DataLoader`` or a lossatlas ``Dataset``.
        params: ``(D,)`` point to measure at (default: the model's current parameters).
        n_directions: ``K``, the number of random directions.
        threshold: threshold value, read according to ``threshold_mode`` (see module docs).
        threshold_mode: ``"absolute"``, ``"additive"`` (default) or ``"multiplicative"``.
        direction_kind: ``"gaussian"`` (isotropic) or ``"filter"`` (Li et al. filter-normalised
            against ``params``); either way rescaled to unit Euclidean length.
        directions: explicit ``(K, D)`` directions (rescaled to unit length); overrides
            ``n_directions``, ``direction_kind`` and ``seed``.
        max_distance: largest distance searched; rays that never pass are censored there.
        initial_step: first scan distance.
        scan_steps: scan grid points per doubling of the distance (1 = pure doubling).
        tol: relative tolerance on each distance (see the module docs).
        seed: directions come from ``make_generator(seed, "width")``, so the same seed gives
            the same raw Gaussian draws at every point (common random numbers along a
            trajectory).
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.
        adapter: how batches are read and scored (:class:`~lossatlas.BatchAdapter`).
        wrt: which parameters span the space (default the trainable ones); the directions
            and ``params`` live in it, the others stay fixed.
        split: which split of a ``Dataset`` to use; ``(X, y)`` and loaders only have ``"train"``.
            Data that is not in memory is streamed, batch by batch, at every evaluation.
        buffers: module buffers to evaluate with (default: the module's own).
        keep_directions: keep the ``(K, D)`` directions in the result.
        sample_chunk, point_chunk: forwarded to :func:`~lossatlas.evaluate.evaluate_points`.
        autocast: ``"bf16"`` or ``"fp16"``: every loss evaluation's forward passes run under
            ``torch.autocast`` (default ``None``: off); the error this makes is measured at the
            end and reported in ``autocast_error``.

    Returns:
        a :class:`TunnelWidth`.
    """
    space = ParamSpace(model, wrt)
    source = as_batches(data, resolve_adapter(adapter, loss_fn), split=split)
    point_arg = check_point(params)
    point = space.flatten() if point_arg is None else point_arg.detach()
    _check_search(tol, initial_step, max_distance, scan_steps, threshold_mode)
    space._check(point, batched=False)
    # In-memory tensors are moved to the point's device once; streamed data batch by batch.
    pieces = list(source.stream(point.device, point.dtype)) if source.in_memory else None
    unit, norms, kind = _make_directions(
        space,
        point,
        n_directions=n_directions,
        direction_kind=direction_kind,
        directions=directions,
        seed=seed,
    )
    k = unit.shape[0]

    def losses_at(rows: torch.Tensor, t: torch.Tensor, cast: Autocast = autocast) -> torch.Tensor:
        """Loss at ``point + t_i * unit[rows_i]`` for every selected ray, in one batched call."""
        thetas = point.unsqueeze(0) + t.unsqueeze(1) * unit[rows]
        total, count = thetas.new_zeros(thetas.shape[0]), 0
        for batch in pieces if pieces is not None else source.stream(point.device, point.dtype):
            loss, _ = evaluate_points(
                space,
                thetas,
                batch,
                buffers=buffers,
                sample_chunk=sample_chunk,
                point_chunk=point_chunk,
                autocast=cast,
            )
            total += loss * batch.size
            count += batch.size
        return total / count

    base_loss = float(
        losses_at(torch.zeros(1, dtype=torch.long, device=point.device), point.new_zeros(1))[0]
    )
    evaluations = 1
    level = _absolute_threshold(base_loss, threshold, threshold_mode)

    # Brackets per ray: loss(lo) does not pass the threshold, loss(hi) does; the losses at both
    # ends are kept for the root search, which needs them and should not pay for them again.
    lo = point.new_zeros(k)
    hi = point.new_full((k,), max_distance)
    loss_lo = torch.full((k,), base_loss, dtype=torch.float64, device=point.device)
    loss_hi = torch.full((k,), math.inf, dtype=torch.float64, device=point.device)
    passed = torch.zeros(k, dtype=torch.bool, device=point.device)
    if not base_loss <= level:
        # The point itself already passes (absolute mode below the current loss): width 0.
        lo.zero_()
        hi.zero_()
        passed.fill_(True)
    else:
        # Scan phase: all unresolved rays step through the shared grid together, so the first
        # passing grid interval is found with one batched evaluation per grid point.
        for t in _scan_grid(initial_step, max_distance, scan_steps):
            rows = (~passed).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            loss = losses_at(rows, point.new_full((rows.numel(),), t))
            evaluations += rows.numel()
            # `not <=` rather than `>` so that NaN/inf (a diverged forward pass) counts as passing.
            now = ~(loss <= level)
            hi[rows[now]] = t
            lo[rows[~now]] = t
            passed[rows[now]] = True
            loss_hi[rows[now]] = loss[now].double()
            loss_lo[rows[~now]] = loss[~now].double()
        todo = (passed & (hi > lo)).nonzero().squeeze(1)
        if todo.numel():
            evaluations += _refine(losses_at, todo, lo, hi, loss_lo, loss_hi, level, tol)

    censored_mask = ~passed
    distances = torch.where(passed, 0.5 * (lo + hi), lo.new_full((k,), max_distance))
    std = float(distances.std()) if k > 1 else 0.0
    error = None
    if autocast is not None:
        rows = torch.arange(-1, k, device=point.device).clamp_min(0)  # the base point, each ray
        at = torch.cat([point.new_zeros(1), distances])
        error = precision_error(losses_at(rows, at), losses_at(rows, at, None))
        error["checked_points"] = k + 1
    return TunnelWidth(
        distances=distances,
        censored_mask=censored_mask,
        directions=unit if keep_directions else None,
        direction_norms=norms,
        threshold=level,
        threshold_mode=threshold_mode,
        base_loss=base_loss,
        weight_norm=float(point.norm()),
        mean=float(distances.mean()),
        std=std,
        censored=int(censored_mask.sum()),
        max_distance=float(max_distance),
        direction_kind=kind,
        tol=float(tol),
        evaluations=evaluations,
        autocast_error=error,
    )


def width_over_snapshots(
    model: nn.Module,
    data: Any,
    snapshots: Any,
    *,
    member: int | None = None,
    split: str = "train",
    **kw: Any,
) -> dict[str, np.ndarray]:
    """Tunnel width at every snapshot of a trajectory: the width-vs-R curve.

    Snapshots are read and measured one at a time, so a long trajectory stored on disk never
    has to be in memory.

    Args:
        model: the architecture the snapshots belong to.
        data: as in :func:`tunnel_width` (resolved once, not per snapshot).
        snapshots: ``(S, D)`` array-like (torch tensor, numpy array, zarr array: anything with
            ``.shape`` and row indexing), a ``(K, S, D)`` array-like together with ``member``
            (e.g. the store's ``train/snapshots``; only that member's rows are read), or any
            iterable of ``(D,)`` points (a generator is consumed lazily).
        member: row of a ``(K, S, D)`` array to use.
        split: data split, as in :func:`tunnel_width`.
        **kw: any other keyword of :func:`tunnel_width` except ``params`` (e.g. ``threshold``,
            ``n_directions``, ``seed``). Directions are not kept per snapshot unless
            ``keep_directions=True`` is passed, and even then they are not returned.

    Returns:
        dict of numpy arrays over the ``S`` snapshots: ``index`` (S,), ``weight_norm`` (S,),
        ``width_mean`` (S,), ``width_std`` (S,), ``censored`` (S,) int, ``base_loss`` (S,),
        ``threshold`` (S,) (absolute level used) and ``distances`` (S, K).
    """
    if "params" in kw:
        raise TypeError("width_over_snapshots takes the points from `snapshots`, not `params`")
    kw.setdefault("keep_directions", False)
    space = ParamSpace(model, kw.get("wrt"))
    adapter = resolve_adapter(kw.pop("adapter", None), kw.pop("loss_fn", None))
    source = as_batches(data, adapter, split=split)
    reference = space.flatten()  # snapshots are stored float32 on CPU; measure like the model
    rows: dict[str, list[Any]] = {
        key: []
        for key in (
            "index",
            "weight_norm",
            "width_mean",
            "width_std",
            "censored",
            "base_loss",
            "threshold",
            "distances",
        )
    }
    for index, row in enumerate(_iter_snapshots(snapshots, member)):
        point = torch.as_tensor(np.asarray(row) if not isinstance(row, torch.Tensor) else row)
        point = point.detach().to(device=reference.device, dtype=reference.dtype).reshape(-1)
        if point.shape[0] != space.dim:
            raise ValueError(
                f"snapshot {index} has {point.shape[0]} numbers, the model D={space.dim}"
            )
        # The tensors are already resolved, so tunnel_width only re-wraps them; going through
        # it keeps one definition of the search's defaults and validation.
        width = tunnel_width(model, source, params=point, **kw)
        rows["index"].append(index)
        rows["weight_norm"].append(width.weight_norm)
        rows["width_mean"].append(width.mean)
        rows["width_std"].append(width.std)
        rows["censored"].append(width.censored)
        rows["base_loss"].append(width.base_loss)
        rows["threshold"].append(width.threshold)
        rows["distances"].append(width.distances.cpu().numpy())
    out = {key: np.asarray(values, dtype=np.float64) for key, values in rows.items()}
    out["index"] = out["index"].astype(np.int64)
    out["censored"] = out["censored"].astype(np.int64)
    if not rows["distances"]:
        out["distances"] = np.zeros((0, 0), dtype=np.float64)
    return out


# ---------------------------------------------------------------------------------- internals


def _iter_snapshots(snapshots: Any, member: int | None) -> Iterator[Any]:
    """Yield snapshot rows one at a time without materialising the whole array."""
    shape = getattr(snapshots, "shape", None)
    if shape is not None and hasattr(snapshots, "__getitem__"):
        if len(shape) == 3:
            if member is None:
                raise ValueError(
                    f"snapshots of shape {tuple(shape)} are (K, S, D): pass member= to pick a row"
                )
            for i in range(shape[1]):
                yield snapshots[member, i]  # reads one (D,) chunk of a zarr array
            return
        if member is not None:
            raise ValueError("member= only applies to (K, S, D) snapshots")
        if len(shape) != 2:
            raise ValueError(f"snapshots must be (S, D) or (K, S, D), got shape {tuple(shape)}")
        for i in range(shape[0]):
            yield snapshots[i]
        return
    if member is not None:
        raise ValueError("member= only applies to (K, S, D) snapshots")
    if not isinstance(snapshots, Iterable):
        raise TypeError("snapshots must be an (S, D) array-like or an iterable of (D,) points")
    yield from snapshots


def _check_search(
    tol: float,
    initial_step: float,
    max_distance: float,
    scan_steps: int,
    threshold_mode: str,
) -> None:
    """Reject search settings before any loss is evaluated (scalars only, no tensors)."""
    if not 0 < tol < 1:
        raise ValueError(f"tol is relative and must lie in (0, 1), got {tol}")
    if not 0 < initial_step <= max_distance or not math.isfinite(max_distance):
        raise ValueError(
            f"need 0 < initial_step <= max_distance < inf, got {initial_step}, {max_distance}"
        )
    if scan_steps < 1:
        raise ValueError(f"scan_steps must be >= 1, got {scan_steps}")
    if threshold_mode not in ("absolute", "additive", "multiplicative"):
        raise ValueError(
            f"unknown threshold_mode '{threshold_mode}' (use absolute, additive or multiplicative)"
        )


def _absolute_threshold(base_loss: float, threshold: float, mode: ThresholdMode) -> float:
    if mode == "absolute":
        return float(threshold)
    if threshold <= 0:
        # A zero margin would make every ray's width 0 (or ill-defined); it is a caller mistake.
        raise ValueError(f"threshold must be > 0 in '{mode}' mode, got {threshold}")
    if mode == "additive":
        return base_loss + threshold
    return base_loss * (1.0 + threshold)  # "multiplicative"; the mode was validated upfront


def _refine(
    losses_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    todo: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    loss_lo: torch.Tensor,
    loss_hi: torch.Tensor,
    level: float,
    tol: float,
) -> int:
    """Narrow the brackets ``[lo, hi]`` of rays ``todo`` to the relative tolerance, in place.

    Chandrupatla's method (:func:`scipy.optimize.elementwise.find_root`) on
    ``f(t) = loss(t) - level``: a bracketing method, like the bisection it replaces, so the
    bracket keeps one end that does not pass and one that does, and the search ends on a
    crossing inside the first passing grid interval. Where the loss is smooth it takes
    inverse-quadratic steps instead of halvings. It stops when ``hi - lo < tol * t_near`` (the
    end nearer the level, so ``<= tol * hi``: the bisection rule, or stricter). Each iteration
    is one batched evaluation of the rays still open. A non-finite loss counts as passing
    (``f = +inf``), which makes that step a halving.

    Args:
        losses_at: ``(rows (R,), t (R,)) -> (R,)`` losses at ``point + t * unit[rows]``.
        todo: ``(R,)`` indices of the rays to refine.
        lo, hi: ``(K,)`` bracket ends, updated in place for ``todo``.
        loss_lo, loss_hi: ``(K,)`` float64 losses at ``lo`` and ``hi``.

    Returns:
        the loss evaluations spent (the bracket ends' are not spent again).
    """
    ends = (lo[todo].double().cpu().numpy(), hi[todo].double().cpu().numpy())
    known = [_excess(loss_lo[todo], level), _excess(loss_hi[todo], level)]
    served = 0

    def excess(t: np.ndarray, rays: np.ndarray) -> np.ndarray:
        nonlocal served
        # scipy evaluates both ends first; those losses are known from the scan.
        if served < 2 and t.shape == ends[served].shape and np.array_equal(t, ends[served]):
            served += 1
            return known[served - 1]
        rows = torch.as_tensor(rays, dtype=torch.long, device=lo.device)
        return _excess(losses_at(rows, torch.as_tensor(t, dtype=lo.dtype, device=lo.device)), level)

    result = find_root(
        excess,
        ends,
        args=(todo.cpu().numpy(),),
        tolerances={"xatol": 0.0, "xrtol": tol, "fatol": 0.0, "frtol": 0.0},
        maxiter=_MAX_ITERATIONS,
    )
    left, right = result.bracket
    on_level = np.asarray(result.f_x) == 0  # the search hit the level itself: report that point
    left = np.where(on_level, result.x, left)
    right = np.where(on_level, result.x, right)
    lo[todo] = torch.as_tensor(left, dtype=lo.dtype, device=lo.device)
    hi[todo] = torch.as_tensor(right, dtype=hi.dtype, device=hi.device)
    return int(np.sum(np.asarray(result.nfev) - 2))


def _excess(loss: torch.Tensor, level: float) -> np.ndarray:
    """``loss - level`` as float64 numpy, with NaN (a diverged pass) as ``+inf``: the sign says
    whether the loss passes the level, by the same rule as the scan's ``not loss <= level``."""
    return (
        (loss.double() - level)
        .nan_to_num(nan=math.inf, posinf=math.inf, neginf=-math.inf)
        .cpu()
        .numpy()
    )


def _scan_grid(initial_step: float, max_distance: float, scan_steps: int) -> list[float]:
    """Shared geometric grid ``initial_step * 2**(j / scan_steps)`` ending at ``max_distance``."""
    grid: list[float] = []
    j = 0
    while True:
        t = initial_step * 2.0 ** (j / scan_steps)
        if t >= max_distance * (1 - 1e-12):
            grid.append(max_distance)
            return grid
        grid.append(t)
        j += 1


def _make_directions(
    space: ParamSpace,
    point: torch.Tensor,
    *,
    n_directions: int,
    direction_kind: DirectionKind,
    directions: torch.Tensor | None,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Unit directions ``(K, D)``, their norms before rescaling ``(K,)``, and their kind."""
    if directions is not None:
        raw = directions.detach().to(device=point.device, dtype=point.dtype)
        if raw.dim() == 1:
            raw = raw.unsqueeze(0)
        if raw.dim() != 2 or raw.shape[1] != space.dim:
            raise ValueError(f"directions must be (K, {space.dim}), got {tuple(directions.shape)}")
        kind = "given"
    else:
        if n_directions < 1:
            raise ValueError(f"n_directions must be >= 1, got {n_directions}")
        generator = make_generator(seed, "width")
        raw = space.random_direction(
            generator, kind=direction_kind, center=point, count=n_directions
        )
        kind = direction_kind
    norms = raw.norm(dim=1)
    if not bool((norms > 0).all()):
        # Filter directions are zero on 1-D parameters, so a model without any 2-D+ weight
        # has no filter direction at all.
        raise ValueError("a direction has zero length; use direction_kind='gaussian'")
    return raw / norms.unsqueeze(1), norms, kind
