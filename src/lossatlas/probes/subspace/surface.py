"""Lines, planes and N-D grids around a center, and planes through three points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lossatlas.data.batches import BatchAdapter
from lossatlas.evaluate import Autocast, LossFn, Strategy
from lossatlas.params import ParamSpace, Wrt
from lossatlas.probes.subspace._setup import as_rows, make_evaluator, resolve_setup, to_numpy
from lossatlas.seeding import make_generator

__all__ = [
    "Span",
    "Surface",
    "pca_directions",
    "plane_through",
    "surface",
    "surface_directions",
    "surface_through",
]


Span = float | tuple[float, float] | Sequence[tuple[float, float]]


@dataclass(eq=False, repr=False)
class Surface:
    """Loss and accuracy on a grid ``center + sum_k coords[k][i_k] * directions[k]``.

    Attributes:
        coords: one ``(steps_k,)`` grid of coordinates per axis.
        loss: ``(steps_0,)`` for a line, ``(steps_0, steps_1)`` for a plane (N-D in general),
            indexed ``[i, j] = (coords[0][i], coords[1][j])``.
        accuracy: same shape as ``loss``; ``None`` when the data has no accuracy (a
            regression target, or ``BatchAdapter(accuracy=None)``).
        center: ``(D,)`` the point at coordinates 0.
        directions: ``(n_axes, D)``.
        kind: where the directions came from: ``"filter"``, ``"gaussian"``, ``"points"``
            (a plane through points), or a caller's label such as ``"pca"``, ``"eigen"``,
            ``"given"``.
        meta: settings and timings (span, steps, seed, split, how it was evaluated, ...).
    """

    coords: tuple[Tensor, ...]
    loss: Tensor
    accuracy: Tensor | None
    center: Tensor
    directions: Tensor
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> int:
        return len(self.coords)

    def __repr__(self) -> str:
        shape = "x".join(str(c.shape[0]) for c in self.coords)
        return f"Surface(kind={self.kind!r}, grid={shape}, D={self.center.shape[0]})"

    def project(self, points: Tensor) -> Tensor:
        """Coordinates ``(n, n_axes)`` of ``points`` (n, D) or (D,) in this surface's frame.

        The least-squares solution of ``center + c @ directions = point``, exact for points on
        the surface; use it to mark optima or overlay a trajectory on a contour plot.
        """
        pts = points.reshape(-1, self.center.shape[0]).to(self.directions)
        delta = (pts - self.center.to(pts)).T  # (D, n)
        return torch.linalg.lstsq(self.directions.T, delta).solution.T

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named numpy arrays for the store: ``coords_{k}``, ``loss``, ``accuracy``, ``center``,
        ``directions``, plus any tensor held in ``meta`` (e.g. ``point_coords``)."""
        arrays = {f"coords_{k}": to_numpy(c) for k, c in enumerate(self.coords)}
        arrays.update(
            loss=to_numpy(self.loss),
            center=to_numpy(self.center),
            directions=to_numpy(self.directions),
        )
        if self.accuracy is not None:
            arrays["accuracy"] = to_numpy(self.accuracy)
        arrays.update({k: to_numpy(v) for k, v in self.meta.items() if isinstance(v, Tensor)})
        return arrays


def _axis_ranges(span: Span, dims: int) -> list[tuple[float, float]]:
    """``span`` as one ``(lo, hi)`` per axis: a scalar ``s`` means ``(-s, s)``."""
    if isinstance(span, (int, float)):
        return [(-float(span), float(span))] * dims
    items: list[Any] = list(span)
    if len(items) == 2 and all(isinstance(v, (int, float)) for v in items):
        return [(float(items[0]), float(items[1]))] * dims
    if len(items) != dims:
        raise ValueError(f"span needs one (lo, hi) per axis ({dims}), got {span!r}")
    return [(float(lo), float(hi)) for lo, hi in items]


def _grid_coords(
    ranges: Sequence[tuple[float, float]],
    steps: int | Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, ...]:
    counts = [int(steps)] * len(ranges) if isinstance(steps, int) else [int(s) for s in steps]
    if len(counts) != len(ranges) or min(counts) < 1:
        raise ValueError(f"steps must be a positive int or one per axis, got {steps!r}")
    coords = []
    for (lo, hi), n in zip(ranges, counts, strict=True):
        # lo + (hi - lo) * i / (n - 1) in float64: the middle of a symmetric grid is exactly 0.
        frac = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
        coords.append((lo + (hi - lo) * frac).to(device=device, dtype=dtype))
    return tuple(coords)


def _grid_coefs(coords: Sequence[Tensor]) -> Tensor:
    """``(prod(steps), n_axes)``: every grid point, first axis slowest (``"ij"`` order)."""
    mesh = torch.meshgrid(*coords, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1)


def surface(
    model: nn.Module,
    data: Any,
    *,
    center: Tensor | None = None,
    directions: str | Tensor = "filter",
    span: Span = 1.0,
    steps: int | Sequence[int] = 51,
    dims: int | None = None,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    wrt: Wrt = None,
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    kind: str | None = None,
    strategy: Strategy = "auto",
    shortcut: bool = True,
    rows: tuple[int, int] | None = None,
    autocast: Autocast = None,
) -> Surface:
    """Loss and accuracy on a line, plane or N-D grid around ``center``.

    Args:
        model: any ``nn.Module``.
        data: ``(X, y)``, a ``DataLoader`` or a lossatlas ``Dataset`` (see ``split``).
        center: ``(D,)`` the grid's origin; default the model's current parameters.
        directions: ``"filter"`` (Li et al.: Gaussian, each filter rescaled to the norm of the
            center's filter, zero on biases and 1-D parameters), ``"gaussian"`` (plain N(0, I)),
            or a ``(n, D)`` tensor of given directions (used as they are; e.g.
            :func:`pca_directions` or Hessian eigenvectors).
        span: a scalar ``s`` (every axis spans ``[-s, s]``), one ``(lo, hi)`` for every axis,
            or a sequence of ``(lo, hi)``, one per axis.
        steps: grid points per axis (an int or one per axis).
        dims: number of random directions (default 2); ignored for given directions.
        seed: seed of the random directions.
        loss_fn: ``loss(logits, y) -> mean``; cross-entropy by default.
        adapter: how batches are read, the model called and its output scored (a
            :class:`~lossatlas.BatchAdapter`; dict batches and ``logits`` outputs need none).
        wrt: which parameters span the space (default the trainable ones; e.g. ``"fc"`` for a
            surface over one layer); ``center`` and ``directions`` then live in that space.
        bn_data: batches to recompute BatchNorm statistics with at every point.
        memory_budget_mb: bound on working memory per chunk.
        split: which split of a ``Dataset`` (``"train"``, ``"val"``, ``"test"``).
        kind: label for the result (default ``directions`` if a string, else ``"given"``).
        strategy: ``"auto"``, ``"loop"`` or ``"vmap"`` (see :func:`~lossatlas.evaluate_points`).
            With the shortcut, a tail of Linear layers and activations and the default loss,
            ``"auto"`` evaluates small models' points in blocks as batched matmuls over points
            (``meta["strategy"] == "stacked"``, same numbers to float rounding).
        shortcut: use the first-layer shortcut when it applies.
        autocast: ``"bf16"`` or ``"fp16"`` evaluates the forward passes under
            ``torch.autocast`` (default ``None``: off). ``meta`` then reports the loss error
            against full precision on a few grid points: ``autocast_max_abs_error``,
            ``autocast_max_rel_error`` and ``autocast_checked_points``.
        rows: ``(start, stop)``: evaluate only rows ``start:stop`` of the grid's first axis
            (for a line, points ``start:stop``); ``coords[0]`` then holds those rows of the
            full grid's coordinates and ``meta["rows"]`` says which. Blocks of rows evaluated
            apart (with the same directions, e.g. from :func:`surface_directions`) and stacked
            along the first axis give the full surface. Default: every row.

    Returns:
        A :class:`Surface` with ``loss`` of shape ``(steps,) * n_axes`` (the first axis cut to
        ``stop - start`` with ``rows``).
    """
    setup = resolve_setup(model, data, split, center, wrt=wrt, adapter=adapter, loss_fn=loss_fn)
    if center is None:
        center = setup.space.flatten().to(device=setup.device, dtype=setup.dtype)
    center = center.detach()
    dirs, label = surface_directions(setup.space, center, directions, dims=dims, seed=seed)
    coords = _grid_coords(_axis_ranges(span, dirs.shape[0]), steps, center.dtype, center.device)
    if rows is not None:
        coords = (_row_block(coords[0], rows), *coords[1:])
    evaluator = make_evaluator(
        model,
        setup,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
        autocast=autocast,
    )
    loss, acc = evaluator.evaluate(center, dirs, _grid_coefs(coords))
    shape = tuple(c.shape[0] for c in coords)
    meta = {
        "span": [(float(c[0]), float(c[-1])) for c in coords],
        "steps": list(shape),
        "seed": seed,
        "split": split,
        "n_samples": evaluator.num_samples,
        **evaluator.info.as_meta(),
    }
    if rows is not None:
        meta["rows"] = [int(rows[0]), int(rows[1])]
    accuracy = acc.reshape(shape) if evaluator.sample.scored else None
    return Surface(coords, loss.reshape(shape), accuracy, center, dirs, kind or label, meta)


def surface_directions(
    model: nn.Module | ParamSpace,
    center: Tensor,
    directions: str | Tensor = "filter",
    *,
    dims: int | None = None,
    seed: int = 0,
    wrt: Wrt = None,
) -> tuple[Tensor, str]:
    """The directions :func:`surface` spans its grid with, and their default label.

    Draw them once and pass them to several :func:`surface` calls (e.g. one per block of
    ``rows``) to evaluate parts of one grid apart: ``surface(..., directions=dirs)`` with the
    same ``center`` gives exactly the grid that ``surface(..., directions="filter", seed=s)``
    would.

    Args:
        model: the module (or its :class:`~lossatlas.params.ParamSpace`).
        center: ``(D,)`` the grid's origin; random directions come in its dtype and device
            and filter normalisation is relative to it.
        directions: ``"filter"``, ``"gaussian"`` or a ``(n, D)`` (or ``(D,)``) tensor, as for
            :func:`surface`.
        dims: number of random directions (default 2); ignored for given directions.
        seed: seed of the random directions (drawn on the CPU from
            ``make_generator(seed, "surface", "directions")``).
        wrt: which parameters span the space, as for :func:`surface` (only with a module).

    Returns:
        ``(dirs (n_axes, D), label)``: ``label`` is ``directions`` for random ones, else
        ``"given"``.
    """
    space = model if isinstance(model, ParamSpace) else ParamSpace(model, wrt)
    center = center.detach()
    space._check(center, batched=False)
    if not isinstance(directions, str):
        return as_rows(directions, space.dim, "directions").to(center), "given"
    if directions not in ("filter", "gaussian"):
        raise ValueError(
            f"unknown directions '{directions}' (use 'filter', 'gaussian' or a tensor)"
        )
    count = 2 if dims is None else int(dims)
    if count < 1:
        raise ValueError(f"dims must be at least 1, got {dims}")
    generator = make_generator(seed, "surface", "directions")
    dirs = space.random_direction(generator, kind="gaussian", center=center, count=count)
    if directions == "filter":
        dirs = space.filter_normalize(dirs, center)
    return dirs, directions


def _row_block(first: Tensor, rows: tuple[int, int]) -> Tensor:
    """Rows ``start:stop`` of the first axis' coordinates, checked against its length."""
    start, stop = (int(r) for r in rows)
    if not 0 <= start < stop <= first.shape[0]:
        raise ValueError(
            f"rows must be (start, stop) with 0 <= start < stop <= {first.shape[0]}, got {rows!r}"
        )
    # A slice of the full grid's coordinates (not a grid of its own between the block's ends),
    # so blocks put side by side give the full grid's coordinates bit for bit.
    return first[start:stop]


def pca_directions(trajectory: Tensor, k: int = 2, center: Tensor | None = None) -> Tensor:
    """Li et al.'s PCA-of-trajectory directions: the top ``k`` principal axes ``(k, D)``.

    Args:
        trajectory: ``(T, D)`` points along a training run, first to last.
        k: number of directions.
        center: by default the trajectory's mean is subtracted before the SVD, which is what
            Li et al. do (sklearn's ``PCA`` on the differences ``theta_i - theta_final``
            subtracts their mean, and the final point cancels). Pass a point (e.g.
            ``trajectory[-1]``) to take the uncentred principal axes of ``trajectory - center``
            instead: the directions that best explain the displacements from that point.

    Returns:
        ``(k, D)`` orthonormal rows, in decreasing order of explained variance. Signs are fixed
        so that the run moves forward along each axis: ``(last - first) . d >= 0``. Plot the
        surface centred at the final point and overlay ``Surface.project(trajectory)``.
    """
    if trajectory.dim() != 2 or trajectory.shape[0] < 2:
        raise ValueError(f"trajectory must be (T >= 2, D), got {tuple(trajectory.shape)}")
    traj = trajectory.detach()
    ref = traj.mean(dim=0) if center is None else center.detach().to(traj)
    _, _, vh = torch.linalg.svd(traj - ref, full_matrices=False)
    if k < 1 or k > vh.shape[0]:
        raise ValueError(f"k must be between 1 and {vh.shape[0]}, got {k}")
    dirs = vh[:k].clone()
    forward = (traj[-1] - traj[0]) @ dirs.T
    dirs[forward < 0] *= -1
    return dirs


def plane_through(points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The plane through three points: its origin, an orthonormal basis and their coordinates.

    Args:
        points: ``(3, D)``, e.g. ``(init, optimum_1, optimum_2)`` or
            ``(zeros, optimum_1, optimum_2)`` for a cut through the origin of weight space.

    Returns:
        ``(origin (D,), basis (2, D), coords (3, 2))`` with ``origin = points[0]``, ``basis``
        from Gram-Schmidt on ``points[1] - points[0]`` and ``points[2] - points[0]``, and
        ``points[i] == origin + coords[i] @ basis`` (up to rounding). Coordinates are Euclidean
        distances in weight space. Computed in float64, returned in ``points``' dtype.
    """
    if points.dim() != 2 or points.shape[0] != 3:
        raise ValueError(f"points must be (3, D), got {tuple(points.shape)}")
    p = points.detach().to(torch.float64)
    a, b = p[1] - p[0], p[2] - p[0]
    na = a.norm()
    if na == 0:
        raise ValueError("points[0] and points[1] coincide: they span no plane")
    u = a / na
    b_perp = b - (b @ u) * u
    nb = b_perp.norm()
    if nb <= 1e-12 * max(float(na), float(b.norm())):
        raise ValueError("the three points are collinear: they span no plane")
    v = b_perp / nb
    coords = p.new_zeros(3, 2)  # float64 until the end: these are the points' exact positions
    coords[1, 0], coords[2, 0], coords[2, 1] = na, b @ u, nb
    dtype = points.dtype
    return (
        points[0].detach().clone(),
        torch.stack([u, v]).to(dtype),
        coords.to(dtype=dtype, device=points.device),
    )


def surface_through(
    model: nn.Module,
    data: Any,
    points: Tensor,
    *,
    margin: float = 0.25,
    steps: int | Sequence[int] = 51,
    offset: Tensor | None = None,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    wrt: Wrt = None,
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    strategy: Strategy = "auto",
    shortcut: bool = True,
    autocast: Autocast = None,
) -> Surface:
    """Loss on the plane through three points, on a grid that covers all of them.

    Args:
        points: ``(3, D)`` (see :func:`plane_through`).
        margin: the grid extends each axis by ``margin`` times the points' extent on it.
        steps: grid points per axis.
        offset: optional ``(D,)`` vector added to every grid point: the parallel plane shifted
            by ``offset`` (the points' coordinates still refer to the unshifted plane).
        other args: as for :func:`surface`.

    Returns:
        A :class:`Surface` of kind ``"points"`` with ``center = points[0] (+ offset)``,
        orthonormal ``directions`` and ``meta["point_coords"]`` ``(3, 2)``, the coordinates
        of the three points (use them as marks in a contour plot).
    """
    origin, basis, coords = plane_through(points)
    setup = resolve_setup(model, data, split, origin, wrt=wrt, adapter=adapter, loss_fn=loss_fn)
    center = origin if offset is None else origin + offset.detach().to(origin)
    lo, hi = coords.min(dim=0).values, coords.max(dim=0).values
    pad = margin * (hi - lo)
    ranges = [(float(lo[i] - pad[i]), float(hi[i] + pad[i])) for i in range(2)]
    grid = _grid_coords(ranges, steps, origin.dtype, origin.device)
    evaluator = make_evaluator(
        model,
        setup,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
        autocast=autocast,
    )
    loss, acc = evaluator.evaluate(center, basis, _grid_coefs(grid))
    shape = tuple(c.shape[0] for c in grid)
    meta = {
        "span": ranges,
        "steps": list(shape),
        "margin": margin,
        "split": split,
        "n_samples": evaluator.num_samples,
        "point_coords": coords,
        "offset": offset is not None,
        **evaluator.info.as_meta(),
    }
    accuracy = acc.reshape(shape) if evaluator.sample.scored else None
    return Surface(grid, loss.reshape(shape), accuracy, center, basis, "points", meta)
