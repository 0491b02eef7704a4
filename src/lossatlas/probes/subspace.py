"""Low-dimensional slices of the loss landscape: lines, planes, N-D grids, rays and simplices.

Every probe here evaluates the loss and accuracy of ``model`` at many points of an affine
subspace of weight space, in one batched engine (``_grid.SubspaceEvaluator``):

* :func:`surface` - a 1-D line, 2-D plane (or N-D grid) around a center along random
  (Gaussian or Li et al.'s filter-normalised) or given directions (PCA of a trajectory,
  Hessian eigenvectors, ...). Returns a :class:`Surface`. Its ``rows`` argument evaluates one
  block of rows of the grid, so a big grid can be split into independent units of work;
  :func:`surface_directions` draws the directions it uses, once, for all of them.
* :func:`plane_through` / :func:`surface_through` - the plane spanned by three points (e.g. the
  origin and two optima for the cuts of paper A2, or init + two optima).
* :func:`simplex_grid` / :func:`evaluate_simplex` / :func:`dirichlet_samples` - barycentric
  grids and uniform samples on the simplex of ``m + 1`` points (paper A5's m-connectors).
  Returns a :class:`SimplexSurface`.
* :func:`rays` - loss along rays ``origin + a * d`` or radial rays ``a * theta`` (paper A1(c)
  and the radial structure of A2). Returns :class:`Rays`.
* :func:`pca_directions` - Li et al.'s PCA-of-trajectory directions.

Shared conventions:

* ``data`` is an ``(X, y)`` pair, a ``DataLoader`` (read once into memory) or a lossatlas
  ``Dataset``, whose ``split`` (``"train"`` by default, or ``"val"``/``"test"``) is used.
* The loss is the mean of ``loss_fn`` (cross-entropy by default) over the whole split, in eval
  mode. ``bn_data`` (a tensor, an ``(X,)`` tuple or a ``DataLoader``) recomputes BatchNorm
  running statistics at every point first (see below); by default the module's own are used.
* The center's (or the points') dtype and device decide where and in what precision the work
  runs: float32 by default, float64 when the model is float64. If no center is given and ``X``
  lives on an accelerator, the computation follows ``X`` there.
* Directions are drawn from ``lossatlas.seeding.make_generator(seed, "surface", "directions")``
  on the CPU (device-independent), never from global RNG state.
* The user's module is never modified: its parameters are read, its train/eval flags and
  BatchNorm momenta are restored.

Performance: points are evaluated in chunks bounded by ``memory_budget_mb``. A point costs
``D * itemsize`` bytes as a materialised row plus ``samples * act`` bytes of activations,
where ``act`` is measured by tracing one forward pass of two samples (peak bytes of live
tensors, x2 for kernel temporaries); half the budget goes to activations, a quarter to rows of
points, a quarter to precomputed first-layer outputs. When the first parametrised layer is a
Linear/Conv on the input (detected with ``torch.fx``), its output at every point of the subspace
is a combination of ``K + 1`` maps computed once (``shortcut=True``): that layer's matmul
disappears from the per-point cost, and along a grid's fastest axis each point combines just two
cached maps. With ``strategy="auto"`` on CPU, points whose forward pass is big (at least
``LOOP_MIN_SAMPLES`` samples and ``_grid.LOOP_MIN_PASS_BYTES`` of activations) are evaluated one
at a time with full-size matmuls; narrow networks, whose every op is small, run as ``vmap``
groups of cache size; on a GPU everything is batched with ``vmap``.

BatchNorm recompute (``bn_data``, the fix Garipov et al. apply along curves): for every point,
each normalisation layer that tracks running statistics starts from reset statistics and
accumulates the cumulative average (``momentum=None``) over the batches of ``bn_data`` in train
mode; all other layers stay in eval mode, so dropout is off and the result is deterministic.
It runs batched over points with ``vmap`` (``momentum = 1/t`` at batch ``t`` is the same
cumulative average without the ``.item()`` that ``vmap`` forbids), or per point on CPU for big
batches, always with the plain model (the shortcut applies to the evaluation that follows).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lossatlas.evaluate import LossFn, Strategy
from lossatlas.params import ParamSpace
from lossatlas.population import _resolve_data
from lossatlas.probes._grid import SubspaceEvaluator
from lossatlas.seeding import make_generator

__all__ = [
    "Rays",
    "SimplexSurface",
    "Surface",
    "dirichlet_samples",
    "evaluate_simplex",
    "pca_directions",
    "plane_through",
    "rays",
    "simplex_grid",
    "simplex_weights",
    "surface",
    "surface_directions",
    "surface_through",
]

Span = float | tuple[float, float] | Sequence[tuple[float, float]]


# --------------------------------------------------------------------------- results


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@dataclass(eq=False, repr=False)
class Surface:
    """Loss and accuracy on a grid ``center + sum_k coords[k][i_k] * directions[k]``.

    Attributes:
        coords: one ``(steps_k,)`` grid of coordinates per axis.
        loss: ``(steps_0,)`` for a line, ``(steps_0, steps_1)`` for a plane (N-D in general),
            indexed ``[i, j] = (coords[0][i], coords[1][j])``.
        accuracy: same shape as ``loss``.
        center: ``(D,)`` the point at coordinates 0.
        directions: ``(n_axes, D)``.
        kind: where the directions came from: ``"filter"``, ``"gaussian"``, ``"points"``
            (a plane through points), or a caller's label such as ``"pca"``, ``"eigen"``,
            ``"given"``.
        meta: settings and timings (span, steps, seed, split, how it was evaluated, ...).
    """

    coords: tuple[Tensor, ...]
    loss: Tensor
    accuracy: Tensor
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
        arrays = {f"coords_{k}": _numpy(c) for k, c in enumerate(self.coords)}
        arrays.update(
            loss=_numpy(self.loss),
            accuracy=_numpy(self.accuracy),
            center=_numpy(self.center),
            directions=_numpy(self.directions),
        )
        arrays.update({k: _numpy(v) for k, v in self.meta.items() if isinstance(v, Tensor)})
        return arrays


@dataclass(eq=False, repr=False)
class SimplexSurface:
    """Loss and accuracy at points ``weights @ vertices`` of a simplex.

    Attributes:
        vertices: ``(m + 1, D)``.
        weights: ``(P, m + 1)`` barycentric coordinates (non-negative, rows sum to 1).
        loss, accuracy: ``(P,)``.
        meta: settings and timings.
    """

    vertices: Tensor
    weights: Tensor
    loss: Tensor
    accuracy: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def m(self) -> int:
        """The simplex's dimension (``m + 1`` vertices)."""
        return self.vertices.shape[0] - 1

    def __repr__(self) -> str:
        return f"SimplexSurface(m={self.m}, points={self.weights.shape[0]})"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``vertices``, ``weights``, ``loss``, ``accuracy`` as numpy arrays."""
        return {
            "vertices": _numpy(self.vertices),
            "weights": _numpy(self.weights),
            "loss": _numpy(self.loss),
            "accuracy": _numpy(self.accuracy),
        }


@dataclass(eq=False, repr=False)
class Rays:
    """Loss and accuracy along rays.

    Attributes:
        directions: ``(R, D)``; for radial rays, the points ``theta_r`` themselves.
        alphas: ``(A,)`` positions along every ray.
        loss, accuracy: ``(R, A)``; entry ``[r, a]`` is at ``origin + alphas[a] * directions[r]``
            (or ``alphas[a] * directions[r]`` when ``radial``).
        origin: ``(D,)``, or ``None`` for radial rays (which start at the origin of weight space).
        radial: whether the rays scale the points ``directions``.
        meta: settings and timings.
    """

    directions: Tensor
    alphas: Tensor
    loss: Tensor
    accuracy: Tensor
    origin: Tensor | None
    radial: bool
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        r, a = self.loss.shape
        return f"Rays(rays={r}, alphas={a}, radial={self.radial})"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``directions``, ``alphas``, ``loss``, ``accuracy`` (and ``origin``) as numpy arrays."""
        arrays = {
            "directions": _numpy(self.directions),
            "alphas": _numpy(self.alphas),
            "loss": _numpy(self.loss),
            "accuracy": _numpy(self.accuracy),
        }
        if self.origin is not None:
            arrays["origin"] = _numpy(self.origin)
        return arrays


# --------------------------------------------------------------------------- shared setup


@dataclass
class _Setup:
    space: ParamSpace
    x: Tensor
    y: Tensor
    dtype: torch.dtype
    device: torch.device


def _setup(model: nn.Module, data: Any, split: str, like: Tensor | None) -> _Setup:
    """Resolve ``data``'s split and the compute device/dtype (``like``'s, else the model's)."""
    _, _, splits = _resolve_data(data)
    if split not in splits:
        raise ValueError(f"no split '{split}' in the data (available: {', '.join(splits)})")
    x, y = splits[split]
    space = ParamSpace(model)
    if like is None:
        first = next(model.parameters())
        device = x.device if x.device.type != "cpu" else first.device
        dtype = first.dtype
    else:
        device, dtype = like.device, like.dtype
    x = x.to(device=device, dtype=dtype if x.is_floating_point() else None)
    return _Setup(space, x, y.to(device), dtype, device)


def _evaluator(
    model: nn.Module,
    setup: _Setup,
    *,
    loss_fn: LossFn | None,
    bn_data: Any,
    memory_budget_mb: float,
    strategy: Strategy,
    shortcut: bool,
) -> SubspaceEvaluator:
    return SubspaceEvaluator(
        model,
        setup.x,
        setup.y,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
    )


def _as_rows(t: Tensor, dim: int, what: str) -> Tensor:
    rows = t.detach().reshape(1, -1) if t.dim() == 1 else t.detach()
    if rows.dim() != 2 or rows.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {tuple(t.shape)}")
    return rows


# --------------------------------------------------------------------------- surfaces


def _axis_ranges(span: Span, dims: int) -> list[tuple[float, float]]:
    """``span`` as one ``(lo, hi)`` per axis: a scalar ``s`` means ``(-s, s)``."""
    if isinstance(span, (int, float)):
        return [(-float(span), float(span))] * dims
    items = list(span)
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
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    kind: str | None = None,
    strategy: Strategy = "auto",
    shortcut: bool = True,
    rows: tuple[int, int] | None = None,
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
        bn_data: batches to recompute BatchNorm statistics with at every point.
        memory_budget_mb: bound on working memory per chunk.
        split: which split of a ``Dataset`` (``"train"``, ``"val"``, ``"test"``).
        kind: label for the result (default ``directions`` if a string, else ``"given"``).
        strategy: ``"auto"``, ``"loop"`` or ``"vmap"`` (see :func:`~lossatlas.evaluate_points`).
        shortcut: use the first-layer shortcut when it applies.
        rows: ``(start, stop)``: evaluate only rows ``start:stop`` of the grid's first axis
            (for a line, points ``start:stop``); ``coords[0]`` then holds those rows of the
            full grid's coordinates and ``meta["rows"]`` says which. Blocks of rows evaluated
            apart (with the same directions, e.g. from :func:`surface_directions`) and stacked
            along the first axis give the full surface. Default: every row.

    Returns:
        A :class:`Surface` with ``loss`` of shape ``(steps,) * n_axes`` (the first axis cut to
        ``stop - start`` with ``rows``).
    """
    setup = _setup(model, data, split, center)
    if center is None:
        center = setup.space.flatten().to(device=setup.device, dtype=setup.dtype)
    center = center.detach()
    dirs, label = surface_directions(setup.space, center, directions, dims=dims, seed=seed)
    coords = _grid_coords(_axis_ranges(span, dirs.shape[0]), steps, center.dtype, center.device)
    if rows is not None:
        coords = (_row_block(coords[0], rows), *coords[1:])
    evaluator = _evaluator(
        model,
        setup,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
    )
    loss, acc = evaluator.evaluate(center, dirs, _grid_coefs(coords))
    shape = tuple(c.shape[0] for c in coords)
    meta = {
        "span": [(float(c[0]), float(c[-1])) for c in coords],
        "steps": list(shape),
        "seed": seed,
        "split": split,
        "n_samples": int(setup.x.shape[0]),
        **evaluator.info.as_meta(),
    }
    if rows is not None:
        meta["rows"] = [int(rows[0]), int(rows[1])]
    return Surface(
        coords, loss.reshape(shape), acc.reshape(shape), center, dirs, kind or label, meta
    )


def surface_directions(
    model: nn.Module | ParamSpace,
    center: Tensor,
    directions: str | Tensor = "filter",
    *,
    dims: int | None = None,
    seed: int = 0,
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

    Returns:
        ``(dirs (n_axes, D), label)``: ``label`` is ``directions`` for random ones, else
        ``"given"``.
    """
    space = model if isinstance(model, ParamSpace) else ParamSpace(model)
    center = center.detach()
    space._check(center, batched=False)
    if not isinstance(directions, str):
        return _as_rows(directions, space.dim, "directions").to(center), "given"
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
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    strategy: Strategy = "auto",
    shortcut: bool = True,
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
    setup = _setup(model, data, split, origin)
    center = origin if offset is None else origin + offset.detach().to(origin)
    lo, hi = coords.min(dim=0).values, coords.max(dim=0).values
    pad = margin * (hi - lo)
    ranges = [(float(lo[i] - pad[i]), float(hi[i] + pad[i])) for i in range(2)]
    grid = _grid_coords(ranges, steps, origin.dtype, origin.device)
    evaluator = _evaluator(
        model,
        setup,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
    )
    loss, acc = evaluator.evaluate(center, basis, _grid_coefs(grid))
    shape = tuple(c.shape[0] for c in grid)
    meta = {
        "span": ranges,
        "steps": list(shape),
        "margin": margin,
        "split": split,
        "n_samples": int(setup.x.shape[0]),
        "point_coords": coords,
        "offset": offset is not None,
        **evaluator.info.as_meta(),
    }
    return Surface(grid, loss.reshape(shape), acc.reshape(shape), center, basis, "points", meta)


# --------------------------------------------------------------------------- simplices


def simplex_weights(m: int, resolution: int) -> Tensor:
    """All barycentric points ``k / resolution`` of an ``m``-simplex: ``(P, m + 1)`` float64.

    ``P = C(resolution + m, m)``; every row is a composition of ``resolution`` into ``m + 1``
    non-negative parts (divided by ``resolution``), so the vertices (one-hot rows), edge points
    and the interior lattice are all included. Rows are in lexicographic order.
    """
    if m < 1 or resolution < 1:
        raise ValueError(f"need m >= 1 and resolution >= 1, got m={m}, resolution={resolution}")
    rows = []
    # Stars and bars: m bars among resolution + m slots split the stars into m + 1 parts.
    for bars in itertools.combinations(range(resolution + m), m):
        edges = (-1, *bars, resolution + m)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(m + 1)])
    return torch.tensor(rows, dtype=torch.float64) / resolution


def dirichlet_samples(
    vertices: Tensor,
    n: int,
    *,
    alpha: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` barycentric weights ``(n, m + 1)`` drawn from Dirichlet(``alpha``).

    ``alpha = 1`` is the uniform distribution on the simplex of ``vertices`` (m + 1, D), as in
    paper A5 and Benton et al.'s simplex sampling; pass the result to :func:`evaluate_simplex`.
    Draws come from ``generator`` (default ``make_generator(0, "dirichlet")``) via a numpy
    generator seeded from it, so they are reproducible and device-independent. Returned in
    ``vertices``' dtype and device.
    """
    parts = vertices.shape[0]
    conc = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (parts,))
    if np.any(conc <= 0):
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    gen = generator if generator is not None else make_generator(0, "dirichlet")
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    weights = np.random.default_rng(seed).dirichlet(conc, size=n)
    return torch.as_tensor(weights).to(device=vertices.device, dtype=vertices.dtype)


def evaluate_simplex(
    model: nn.Module,
    data: Any,
    vertices: Tensor,
    weights: Tensor,
    *,
    loss_fn: LossFn | None = None,
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    strategy: Strategy = "auto",
    shortcut: bool = True,
) -> SimplexSurface:
    """Loss and accuracy at the points ``weights @ vertices``.

    Args:
        vertices: ``(m + 1, D)``.
        weights: ``(P, m + 1)`` barycentric weights (e.g. :func:`simplex_weights` or
            :func:`dirichlet_samples`). A one-hot row gives exactly its vertex.
        other args: as for :func:`surface`.
    """
    verts = vertices.detach()
    if verts.dim() != 2 or verts.shape[0] < 2:
        raise ValueError(f"vertices must be (m + 1 >= 2, D), got {tuple(vertices.shape)}")
    w = weights.detach().to(verts)
    if w.dim() != 2 or w.shape[1] != verts.shape[0]:
        raise ValueError(f"weights must be (P, {verts.shape[0]}), got {tuple(weights.shape)}")
    setup = _setup(model, data, split, verts)
    setup.space._check(verts)
    evaluator = _evaluator(
        model,
        setup,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
    )
    # No base: sum_i w_i v_i, so a vertex is reproduced bit for bit.
    loss, acc = evaluator.evaluate(None, verts, w)
    meta = {"split": split, "n_samples": int(setup.x.shape[0]), **evaluator.info.as_meta()}
    return SimplexSurface(verts, w, loss, acc, meta)


def simplex_grid(
    model: nn.Module,
    data: Any,
    vertices: Tensor,
    *,
    resolution: int = 10,
    loss_fn: LossFn | None = None,
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    strategy: Strategy = "auto",
    shortcut: bool = True,
) -> SimplexSurface:
    """Loss and accuracy on the barycentric grid of resolution ``resolution`` over a simplex.

    Args:
        vertices: ``(m + 1, D)``, e.g. ``m + 1`` optima.
        resolution: grid points per edge minus one; ``C(resolution + m, m)`` points in all
            (see :func:`simplex_weights`), vertices included.
        other args: as for :func:`surface`.
    """
    weights = simplex_weights(vertices.shape[0] - 1, resolution)
    result = evaluate_simplex(
        model,
        data,
        vertices,
        weights,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        split=split,
        strategy=strategy,
        shortcut=shortcut,
    )
    result.meta["resolution"] = resolution
    return result


# --------------------------------------------------------------------------- rays


def rays(
    model: nn.Module,
    data: Any,
    *,
    directions: Tensor,
    alphas: Tensor | Sequence[float],
    origin: Tensor | None = None,
    radial: bool = False,
    loss_fn: LossFn | None = None,
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    strategy: Strategy = "auto",
    shortcut: bool = True,
) -> Rays:
    """Loss and accuracy along rays: ``origin + a * d_r`` or, radially, ``a * theta_r``.

    Args:
        directions: ``(R, D)`` ray directions, used as given (normalise them first if you want
            ``alphas`` to be distances); for ``radial=True`` the points ``theta_r`` to scale.
        alphas: ``(A,)`` positions along each ray.
        origin: ``(D,)`` common start of the rays; default the model's parameters. Must be
            ``None`` for radial rays, which start at the origin of weight space.
        radial: scale the points (PAPERS A2's radial structure: ``a = 1`` is the point itself,
            ``a = 0`` the origin).
        other args: as for :func:`surface`.

    Returns:
        :class:`Rays` with ``loss`` ``(R, A)``. Each ray is one subspace evaluation (the
        first-layer shortcut then needs two precomputed maps, not ``R + 1``).
    """
    if radial and origin is not None:
        raise ValueError("radial rays scale the points themselves; origin must be None")
    like = directions if radial else origin
    setup = _setup(model, data, split, like)
    space = setup.space
    dirs = _as_rows(directions, space.dim, "directions").to(device=setup.device, dtype=setup.dtype)
    start = None
    if not radial:
        start = space.flatten() if origin is None else origin.detach()
        start = start.to(device=setup.device, dtype=setup.dtype)
        space._check(start, batched=False)
    a = torch.as_tensor(alphas).detach().to(device=setup.device, dtype=setup.dtype).reshape(-1)
    evaluator = _evaluator(
        model,
        setup,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
    )
    losses, accs = [], []
    seconds = 0.0
    for r in range(dirs.shape[0]):
        loss, acc = evaluator.evaluate(start, dirs[r : r + 1], a.unsqueeze(1))
        losses.append(loss)
        accs.append(acc)
        seconds += evaluator.info.seconds
    meta = {"split": split, "n_samples": int(setup.x.shape[0]), **evaluator.info.as_meta()}
    meta["seconds"] = seconds
    return Rays(dirs, a, torch.stack(losses), torch.stack(accs), start, radial, meta)
