"""Low-dimensional slices of the loss landscape: lines, planes, N-D grids, rays and simplices.

Modules: :mod:`~.surface` (lines, planes, grids, planes through points), :mod:`~.simplex`,
:mod:`~.rays`, and what they share (``_setup``).

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

* ``data`` is an ``(X, y)`` pair, a ``DataLoader`` or other re-iterable of batches (streamed:
  read batch by batch at every evaluation, one batch on the device at a time), or a lossatlas
  ``Dataset``, whose ``split`` (``"train"`` by default, or ``"val"``/``"test"``) is used.
  Batches are read by a :class:`~lossatlas.BatchAdapter` (``adapter=``): ``(x, y)`` pairs and
  HuggingFace-style dicts with ``labels`` need none. ``wrt=`` chooses which parameters span
  the space (default the trainable ones).
* The loss is the mean of ``loss_fn`` (cross-entropy by default) over the whole split, in eval
  mode: the exact weighted sum over batches. ``accuracy`` is ``None`` when the data has none.
  ``bn_data`` (a tensor, an ``(X,)`` tuple or a ``DataLoader``) recomputes BatchNorm
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

from lossatlas.probes.subspace.rays import Rays, rays
from lossatlas.probes.subspace.simplex import (
    SimplexSurface,
    dirichlet_samples,
    evaluate_simplex,
    simplex_grid,
    simplex_weights,
)
from lossatlas.probes.subspace.surface import (
    Surface,
    pca_directions,
    plane_through,
    surface,
    surface_directions,
    surface_through,
)

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
