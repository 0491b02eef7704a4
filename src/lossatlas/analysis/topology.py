"""Topology of sampled loss landscapes (PAPERS.md B3, B4): kNN graph, loss filtration, diagrams.

The pipeline, on plain arrays (numpy, or torch tensors that are copied to numpy):

1. :func:`knn_graph` links each sample to its ``k`` **nearest** neighbours. For PHATE's
   diffusion potential (rows ``(S, S')``) the distance between two samples is the Euclidean
   distance between their potential rows, which is PHATE's own *potential distance* (the one
   its MDS step embeds with the default ``mds_dist="euclidean"``). The released script of the
   paper took the *largest* potentials, i.e. the farthest points; we sort distances ascending.
2. :func:`sublevel_filtration` turns the graph into a filtered simplicial complex: a vertex
   enters at its sample's (test) loss and an edge at the larger loss of its two ends.
3. :func:`persistence_diagrams` computes ``H0`` and ``H1`` persistence (coefficients in Z/2).
4. :func:`persistence_summary` and :func:`diagram_distance` turn diagrams into numbers;
   :func:`compare_networks` does that for several networks at once (B4).

:class:`LossTopology` wraps steps 1-4 as a scikit-learn estimator.

Choices fixed here (so that numbers from different runs are comparable):

* **Graph.** Symmetric "or" kNN graph: ``{i, j}`` is an edge when ``j`` is among the ``k``
  nearest neighbours of ``i`` *or* ``i`` is among those of ``j``. A sample is never its own
  neighbour (duplicates of it are). Ties in distance go to the lower sample index, so the graph
  is deterministic. Edges are returned once each, as ``(i, j)`` with ``i < j``, sorted.
* **Complex.** A graph alone (the 1-skeleton) has no 2-simplices, so no ``H1`` class can ever
  die: every cycle would be an infinite bar, and the count of those is just
  ``E - S + components``. We therefore use the *flag (clique) complex* of the graph, expanded to
  ``max_dimension=2`` by default: a triangle enters when its last edge does (the max of its
  edges' values), and a cycle dies when triangles fill it. ``max_dimension=1`` gives the bare
  graph.
* **Diagrams.** Bars of zero length (a vertex merged at the value it was born) are dropped:
  they only count ties. Infinite deaths stay ``inf`` in the diagrams; rows are sorted by
  (birth, death).
* **Summaries.** A bar's lifetime is ``death - birth``. Infinite bars are capped at ``cap``: for
  :class:`LossTopology` that is the largest filtration value, i.e. the largest loss of the
  samples (after it nothing changes), so an essential ``H0`` class counts as living from its
  birth to the top of the landscape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import gudhi
import numpy as np
from gudhi.hera import wasserstein_distance as _hera_wasserstein
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "LossTopology",
    "compare_networks",
    "component_count",
    "connected_knn_graph",
    "diagram_distance",
    "finite_persistence",
    "knn_graph",
    "persistence_diagrams",
    "persistence_summary",
    "rank_normalised",
    "shuffled_h0_persistence",
    "smallest_connecting_k",
    "sublevel_filtration",
]

# Rows of the distance matrix that knn_graph holds at once: a block is _CHUNK x S float64, so
# memory stays ~8 MB per 1000 samples instead of the S x S matrix (3 GB at S = 20k).
_CHUNK = 1024

GraphFrom = Literal["potential", "embedding", "features", "distances"]


def _np(a: Any, dtype: Any = None) -> np.ndarray:
    """``a`` as a numpy array; torch tensors are detached and copied to the CPU."""
    if hasattr(a, "detach"):  # a torch tensor, without importing torch here
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _empty_diagram() -> np.ndarray:
    return np.empty((0, 2), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Graph and filtration
# --------------------------------------------------------------------------------------------


def knn_graph(
    distances_or_features: Any,
    k: int = 20,
    *,
    metric: str = "euclidean",
) -> np.ndarray:
    """Symmetric graph of each sample's ``k`` true nearest neighbours.

    Args:
        distances_or_features: ``(S, F)`` one row per sample (PHATE's diffusion potential
            ``(S, S')``, an embedding ``(S, 2)``, raw features ``(S, D)``), or, with
            ``metric="precomputed"``, an ``(S, S)`` matrix of distances (its diagonal is
            ignored). Do not pass the potential as ``"precomputed"``: it is not a distance.
        k: neighbours per sample, ``1 <= k <= S - 1`` (the paper uses 20).
        metric: ``"precomputed"`` or any metric of :func:`scipy.spatial.distance.cdist`
            (``"euclidean"`` gives PHATE's potential distance on potential rows; ``"cosine"``
            is what the paper's PHATE used on raw parameters).

    Returns:
        ``(E, 2)`` int64 edges ``(i, j)`` with ``i < j``, each undirected edge once, sorted
        lexicographically. ``{i, j}`` is an edge when either is among the other's ``k``
        nearest; equal distances go to the lower index.

    Raises:
        ValueError: on a non-2-D, non-finite or (precomputed) non-square/negative input, or
            an out-of-range ``k``.
    """
    x = _np(distances_or_features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"knn_graph needs a 2-D array (S, F), got shape {x.shape}")
    s = x.shape[0]
    if not np.all(np.isfinite(x)):
        raise ValueError("knn_graph input contains NaN or infinite values")
    if metric == "precomputed":
        if x.shape[1] != s:
            raise ValueError(f"metric='precomputed' needs a square (S, S) matrix, got {x.shape}")
        if np.any(x < 0):
            raise ValueError("metric='precomputed' needs non-negative distances")
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= s - 1:
        raise ValueError(f"k must be an integer in [1, S - 1] = [1, {s - 1}], got {k}")
    k = int(k)

    neighbours = np.empty((s, k), dtype=np.int64)
    for start in range(0, s, _CHUNK):
        stop = min(start + _CHUNK, s)
        block = x[start:stop] if metric == "precomputed" else cdist(x[start:stop], x, metric)
        block = np.array(block, dtype=np.float64)  # a copy: we write the diagonal below
        if not np.all(np.isfinite(block)):
            # e.g. the cosine distance of an all-zero row
            raise ValueError(f"metric={metric!r} gave non-finite distances")
        rows = np.arange(stop - start)
        block[rows, start + rows] = np.inf  # a sample is not its own neighbour
        # A stable sort keeps equal distances in index order: deterministic ties, lowest first.
        # Ascending order = nearest first (the released script took the largest: the farthest).
        neighbours[start:stop] = np.argsort(block, axis=1, kind="stable")[:, :k]

    src = np.repeat(np.arange(s, dtype=np.int64), k)
    dst = neighbours.ravel()
    edges = np.stack([np.minimum(src, dst), np.maximum(src, dst)], axis=1)
    return np.unique(edges, axis=0)  # deduplicates i->j and j->i; sorted lexicographically


def component_count(edges: Any, n_vertices: int) -> int:
    """Connected components of the graph on ``n_vertices`` vertices with ``(E, 2)`` edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = _np(edges, np.int64).reshape(-1, 2)
    adjacency = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_vertices, n_vertices))
    return int(connected_components(adjacency, directed=False)[0])


def smallest_connecting_k(connected: Any, low: int, high: int) -> int:
    """The smallest ``k`` in ``[low, high]`` with ``connected(k)`` true, by bisection.

    ``connected`` must be monotone (a kNN graph with more neighbours keeps every edge of one
    with fewer) and true at ``high`` (``S - 1`` neighbours: the complete graph).
    """
    if connected(low):
        return int(low)
    while high - low > 1:  # connected(high) holds, connected(low) does not
        mid = (low + high) // 2
        low, high = (low, mid) if connected(mid) else (mid, high)
    return int(high)


def connected_knn_graph(
    distances_or_features: Any, k: int = 20, *, metric: str = "euclidean"
) -> tuple[np.ndarray, int]:
    """:func:`knn_graph` joined into one piece by the edges of a minimum spanning tree.

    The union of the kNN graph and the Euclidean (``metric``) minimum spanning tree of the
    samples: the tree adds, between pieces of the kNN graph, the shortest links that join
    them, and within a piece only edges that are already short, so the graph stays local
    (``k`` is not inflated until everything touches) and is always connected. A persistence
    diagram of a graph in pieces counts its components (each an essential ``H0`` class), not
    the landscape.

    Returns:
        The ``(E, 2)`` edges (``i < j``, sorted) and the kNN graph's own number of components.
    """
    from scipy.sparse.csgraph import minimum_spanning_tree

    x = _np(distances_or_features, np.float64)
    s = x.shape[0]
    dist = x if metric == "precomputed" else cdist(x, x, metric)
    edges = knn_graph(dist, k, metric="precomputed")
    pieces = component_count(edges, s)
    if pieces == 1:
        return edges, 1
    # A zero distance would be no edge to the sparse tree; a tiny floor keeps duplicates.
    tree = minimum_spanning_tree(np.maximum(dist, np.finfo(float).tiny) * (1 - np.eye(s))).tocoo()
    extra = np.stack([np.minimum(tree.row, tree.col), np.maximum(tree.row, tree.col)], axis=1)
    return np.unique(np.concatenate([edges, extra.astype(np.int64)]), axis=0), pieces


def rank_normalised(values: Any) -> np.ndarray:
    """``(S,)`` values replaced by their ranks / S, in ``(0, 1]`` (ties share their mean rank).

    A filtration by these ranks depends only on the order of the losses, so neither their
    range nor their scale (a network with 10x the loss) moves a bar.
    """
    from scipy.stats import rankdata

    v = _np(values, np.float64)
    return rankdata(v, method="average") / v.size


def finite_persistence(diagram: Any) -> float:
    """Total lifetime of a diagram's finite bars (its essential classes left out)."""
    d = _as_diagram(diagram)
    finite = d[np.isfinite(d[:, 1])]
    return float(np.sum(finite[:, 1] - finite[:, 0]))


def sublevel_filtration(
    edges: Any,
    vertex_values: Any,
    *,
    max_dimension: int = 2,
) -> gudhi.SimplexTree:
    """Sublevel-set filtration of a graph by vertex values, as a gudhi simplex tree.

    Vertex ``i`` enters at ``vertex_values[i]`` and edge ``{i, j}`` at
    ``max(vertex_values[i], vertex_values[j])``. The graph is then expanded to its flag
    complex up to ``max_dimension`` (each clique simplex enters with its last edge), so that
    ``H1`` classes can die; ``max_dimension=1`` keeps only the graph, where they never do.

    Args:
        edges: ``(E, 2)`` integer vertex pairs (any order; duplicates are harmless).
        vertex_values: ``(S,)`` finite values, one per vertex (a sample's test loss); every
            vertex is inserted, also one without edges.
        max_dimension: highest simplex dimension, ``>= 1``.

    Returns:
        The :class:`gudhi.SimplexTree` (persistence not yet computed).
    """
    values = _np(vertex_values, np.float64)
    if values.ndim != 1:
        raise ValueError(f"vertex_values must be 1-D (S,), got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("vertex_values contain NaN or infinite values")
    e = _np(edges)
    if e.size == 0:
        e = np.empty((0, 2), dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"edges must have shape (E, 2), got {e.shape}")
    if not np.issubdtype(e.dtype, np.integer):
        raise ValueError(f"edges must be integer vertex indices, got dtype {e.dtype}")
    e = e.astype(np.int64)
    s = values.shape[0]
    if e.size and (e.min() < 0 or e.max() >= s):
        raise ValueError(f"edges refer to vertices outside [0, {s - 1}]")
    if np.any(e[:, 0] == e[:, 1]):
        raise ValueError("edges contain self-loops")
    if isinstance(max_dimension, bool) or int(max_dimension) != max_dimension or max_dimension < 1:
        raise ValueError(f"max_dimension must be an integer >= 1, got {max_dimension}")

    st = gudhi.SimplexTree()
    # Vertices first, with their own values: inserting an edge inserts missing faces too, and
    # we want every vertex at its loss, not at an edge's value.
    st.insert_batch(np.arange(s, dtype=np.int64)[None, :], values)
    if e.size:
        st.insert_batch(e.T.copy(), np.maximum(values[e[:, 0]], values[e[:, 1]]))
    if max_dimension > 1:
        st.expansion(int(max_dimension))  # flag complex; new simplices get the max of faces
    return st


def persistence_diagrams(
    simplex_tree: gudhi.SimplexTree,
    homology_dims: Iterable[int] = (0, 1),
) -> dict[int, np.ndarray]:
    """Persistence diagrams of a filtered complex, one per homology dimension.

    Homology over Z/2. Zero-length bars are dropped (see the module docstring).

    Args:
        simplex_tree: a filtered complex, e.g. from :func:`sublevel_filtration`.
        homology_dims: dimensions to return.

    Returns:
        ``{dim: (n, 2) float64 array of (birth, death)}``; infinite deaths are ``inf``; rows
        sorted by (birth, death).
    """
    # persistence_dim_max=True: also report the top dimension (e.g. H1 of a bare graph).
    simplex_tree.compute_persistence(
        homology_coeff_field=2, min_persistence=0.0, persistence_dim_max=True
    )
    out: dict[int, np.ndarray] = {}
    for dim in homology_dims:
        bars = np.asarray(simplex_tree.persistence_intervals_in_dimension(int(dim)), np.float64)
        bars = bars.reshape(-1, 2)
        out[int(dim)] = bars[np.lexsort((bars[:, 1], bars[:, 0]))]
    return out


# --------------------------------------------------------------------------------------------
# Summaries and distances
# --------------------------------------------------------------------------------------------


def _as_diagram(d: Any) -> np.ndarray:
    arr = _np(d, np.float64)
    if arr.size == 0:
        return _empty_diagram()
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"a persistence diagram must have shape (n, 2), got {arr.shape}")
    if np.any(np.isnan(arr)) or np.any(np.isinf(arr[:, 0])):
        raise ValueError("a persistence diagram needs finite births and non-NaN deaths")
    if np.any(arr[:, 1] < arr[:, 0]):
        raise ValueError("a persistence diagram has a death before its birth")
    return arr


def _default_cap(diagrams: Iterable[np.ndarray]) -> float:
    """The largest finite value in the diagrams (0 if there is none)."""
    finite = [d[np.isfinite(d)] for d in diagrams]
    values = np.concatenate(finite) if finite else np.empty(0)
    return float(values.max()) if values.size else 0.0


def _cap_deaths(d: np.ndarray, cap: float) -> np.ndarray:
    out = d.copy()
    out[np.isinf(out[:, 1]), 1] = cap
    if np.any(out[:, 1] < out[:, 0]):
        raise ValueError(f"cap={cap} is below the birth of an infinite bar")
    return out


def persistence_summary(
    diagrams: Mapping[int, Any],
    *,
    cap: float | None = None,
) -> dict[str, float]:
    """Scalar summaries of each diagram.

    For each dimension ``d`` in ``diagrams``, with lifetimes ``l_i = death_i - birth_i``
    (infinite deaths replaced by ``cap``) and ``L = sum_i l_i``:

    * ``h{d}_total_persistence``: ``L`` (equal to ``h{d}_p1_norm``);
    * ``h{d}_p1_norm``, ``h{d}_p2_norm``, ``h{d}_pinf_norm``: the ``p``-norm of the lifetimes
      ``(sum_i l_i^p)^(1/p)``; ``pinf`` is the longest bar;
    * ``h{d}_entropy``: persistent entropy ``-sum_i (l_i / L) log(l_i / L)`` (natural log;
      bars of zero length add nothing; 0 when ``L = 0``);
    * ``h{d}_n_features``, ``h{d}_n_finite``, ``h{d}_n_infinite``: numbers of bars.

    Args:
        diagrams: ``{dim: (n, 2) array of (birth, death)}``, deaths may be ``inf``.
        cap: value that infinite deaths are capped at. ``None``: the largest finite value in
            all the diagrams (:class:`LossTopology` passes the largest loss instead).

    Returns:
        Flat ``{name: float}`` in order of dimension.
    """
    dgms = {int(d): _as_diagram(v) for d, v in diagrams.items()}
    cap_value = _default_cap(dgms.values()) if cap is None else float(cap)
    out: dict[str, float] = {}
    for dim in sorted(dgms):
        d = dgms[dim]
        n_inf = int(np.isinf(d[:, 1]).sum())
        life = np.diff(_cap_deaths(d, cap_value), axis=1).ravel()
        total = float(life.sum())
        if total > 0:
            p = life[life > 0] / total
            entropy = float(-(p * np.log(p)).sum())
        else:
            entropy = 0.0
        out[f"h{dim}_total_persistence"] = total
        out[f"h{dim}_p1_norm"] = total
        out[f"h{dim}_p2_norm"] = float(np.sqrt((life**2).sum()))
        out[f"h{dim}_pinf_norm"] = float(life.max()) if life.size else 0.0
        out[f"h{dim}_entropy"] = entropy
        out[f"h{dim}_n_features"] = float(d.shape[0])
        out[f"h{dim}_n_finite"] = float(d.shape[0] - n_inf)
        out[f"h{dim}_n_infinite"] = float(n_inf)
    return out


def diagram_distance(
    a: Any,
    b: Any,
    *,
    metric: Literal["bottleneck", "wasserstein"] = "bottleneck",
    order: float = 1.0,
    cap: float | None = None,
    delta: float = 1e-6,
) -> float:
    """Bottleneck or Wasserstein distance between two persistence diagrams.

    Both use the L-infinity distance between points of the plane, and points may be matched
    to the diagonal (as in gudhi and the usual definitions). The bottleneck distance is
    :func:`gudhi.bottleneck_distance` (exact); the Wasserstein distance is
    :func:`gudhi.hera.wasserstein_distance` (Hera's auction algorithm, relative error at most
    ``delta``), which ships with gudhi: ``gudhi.wasserstein`` would need the POT package.

    Infinite points: with ``cap=None`` they are matched among themselves by birth, and the
    distance is ``inf`` when the two diagrams have different numbers of them. With a ``cap``
    they become ordinary points ``(birth, cap)``, so the distance stays finite.

    Args:
        a, b: ``(n, 2)`` and ``(m, 2)`` diagrams of (birth, death).
        metric: ``"bottleneck"`` or ``"wasserstein"``.
        order: the Wasserstein exponent ``q >= 1`` (ignored by the bottleneck distance).
        cap: value that infinite deaths are capped at, or ``None``.
        delta: Wasserstein relative error (Hera needs ``delta > 0``).

    Returns:
        The distance (``>= 0``, possibly ``inf``).
    """
    da, db = _as_diagram(a), _as_diagram(b)
    if cap is not None:
        da, db = _cap_deaths(da, float(cap)), _cap_deaths(db, float(cap))
    if metric == "bottleneck":
        # e=None: gudhi's exact algorithm, which reports its error bound, the smallest positive
        # double (~2e-308), for identical diagrams; no real distance is that small, so snap it.
        distance = float(gudhi.bottleneck_distance(da, db))
        return 0.0 if distance < 1e-300 else distance
    if metric == "wasserstein":
        if not order >= 1:
            raise ValueError(f"Wasserstein order must be >= 1, got {order}")
        if not delta > 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        return float(
            _hera_wasserstein(da, db, order=float(order), internal_p=math.inf, delta=delta)
        )
    raise ValueError(f"metric must be 'bottleneck' or 'wasserstein', got {metric!r}")


# --------------------------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------------------------


class LossTopology(BaseEstimator):
    """Persistent homology of sampled losses on a kNN graph of the samples (PAPERS.md B3).

    Follows the scikit-learn estimator contract: every parameter is stored by ``__init__``
    unchanged and checked in :meth:`fit`; learned attributes end in ``_``.

    Parameters:
        k: neighbours per sample in the kNN graph (the paper: 20).
        max_dimension: highest simplex dimension of the flag complex (2: triangles, so ``H1``
            classes can die; 1: the bare graph, where they never do).
        homology_dims: homology dimensions to compute, each ``<= max_dimension``.
        graph_from: what ``X`` holds. ``"potential"``: PHATE's diffusion potential
            ``(S, S')`` (rows compared with ``metric``, Euclidean = PHATE's potential
            distance); ``"embedding"``: low-dimensional coordinates ``(S, 2|3)``;
            ``"features"``: raw per-sample vectors ``(S, D)``; ``"distances"``: an ``(S, S)``
            distance matrix (``metric`` is ignored).
        metric: a :func:`scipy.spatial.distance.cdist` metric for the rows of ``X``.
        filtration: ``"loss"`` (vertex ``i`` enters at its loss) or ``"rank"`` (at its loss's
            rank / S, :func:`rank_normalised`: bars in units of the share of samples, so the
            loss range and scale do not decide).
        connect: join the kNN graph's pieces by minimum-spanning-tree edges
            (:func:`connected_knn_graph`), so the diagrams do not count graph pieces.

    Attributes:
        edges_: ``(E, 2)`` kNN graph edges, ``i < j``.
        components_: connected components of the kNN graph before any joining.
        losses_: ``(S,)`` the losses, as given (row ``i`` of ``X`` has loss ``losses_[i]``).
        values_: ``(S,)`` the vertices' filtration values (the losses, or their ranks / S).
        cap_: the largest filtration value, at which infinite bars are capped in
            :attr:`summary_`.
        diagrams_: ``{dim: (n, 2)}`` persistence diagrams, infinite deaths ``inf``.
        summary_: :func:`persistence_summary` of :attr:`diagrams_` with ``cap=cap_``.
        n_features_in_: number of columns of ``X``.
    """

    def __init__(
        self,
        k: int = 20,
        max_dimension: int = 2,
        homology_dims: tuple[int, ...] = (0, 1),
        graph_from: GraphFrom = "potential",
        metric: str = "euclidean",
        filtration: Literal["loss", "rank"] = "loss",
        connect: bool = False,
    ) -> None:
        self.k = k
        self.max_dimension = max_dimension
        self.homology_dims = homology_dims
        self.graph_from = graph_from
        self.metric = metric
        self.filtration = filtration
        self.connect = connect

    def fit(self, X: Any, losses: Any) -> LossTopology:
        """Build the graph of the rows of ``X`` and the persistence of ``losses`` on it.

        Args:
            X: ``(S, F)`` per-sample rows (see ``graph_from``), or ``(S, S)`` distances.
            losses: ``(S,)`` finite test losses; ``losses[i]`` belongs to row ``i`` of ``X``
                (the released script was off by one sample: keep them aligned).

        Returns:
            self
        """
        if self.graph_from not in ("potential", "embedding", "features", "distances"):
            raise ValueError(
                "graph_from must be 'potential', 'embedding', 'features' or 'distances', "
                f"got {self.graph_from!r}"
            )
        dims = tuple(int(d) for d in self.homology_dims)
        if not dims or any(d < 0 or d > self.max_dimension for d in dims):
            raise ValueError(
                f"homology_dims must be non-empty, each in [0, max_dimension={self.max_dimension}]"
                f", got {self.homology_dims}"
            )
        x = _np(X, np.float64)
        y = _np(losses, np.float64)
        if x.ndim != 2:
            raise ValueError(f"X must be 2-D (S, F), got shape {x.shape}")
        if y.ndim != 1:
            raise ValueError(f"losses must be 1-D (S,), got shape {y.shape}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(
                f"losses has {y.shape[0]} entries but X has {x.shape[0]} rows: "
                "each sample needs exactly its own loss"
            )
        if not np.all(np.isfinite(y)):
            bad = np.flatnonzero(~np.isfinite(y))
            raise ValueError(f"losses must be finite; samples {bad[:10].tolist()} are not")
        if not np.all(np.isfinite(x)):
            raise ValueError("X contains NaN or infinite values")

        if self.filtration not in ("loss", "rank"):
            raise ValueError(f"filtration must be 'loss' or 'rank', got {self.filtration!r}")
        metric = "precomputed" if self.graph_from == "distances" else self.metric
        if self.connect:
            self.edges_, self.components_ = connected_knn_graph(x, self.k, metric=metric)
        else:
            self.edges_ = knn_graph(x, self.k, metric=metric)
            self.components_ = component_count(self.edges_, x.shape[0])
        values = rank_normalised(y) if self.filtration == "rank" else y.copy()
        st = sublevel_filtration(self.edges_, values, max_dimension=self.max_dimension)
        self.losses_ = y.copy()
        self.values_ = values
        self.cap_ = float(values.max())
        self.diagrams_ = persistence_diagrams(st, dims)
        self.summary_ = persistence_summary(self.diagrams_, cap=self.cap_)
        self.n_features_in_ = x.shape[1]
        return self

    def diagram(self, dim: int) -> np.ndarray:
        """The ``(n, 2)`` diagram of homology dimension ``dim`` (a copy)."""
        check_is_fitted(self)
        if dim not in self.diagrams_:
            raise KeyError(f"dimension {dim} not computed; homology_dims={self.homology_dims}")
        return self.diagrams_[dim].copy()


def shuffled_h0_persistence(
    edges: Any, values: Any, rng: np.random.Generator, draws: int
) -> np.ndarray:
    """The permutation null of :func:`finite_persistence` of ``H0``: ``(draws,)`` values, each
    with ``values`` shuffled across the vertices of the same graph.

    ``H0`` of a sublevel filtration depends on the graph alone (triangles never merge
    components), so the null is computed on the graph, which is fast.
    """
    v = _np(values, np.float64)
    out = np.empty(int(draws))
    for j in range(int(draws)):
        st = sublevel_filtration(edges, rng.permutation(v), max_dimension=1)
        out[j] = finite_persistence(persistence_diagrams(st, (0,))[0])
    return out


def _diagrams_of(name: str, item: Any) -> tuple[dict[int, np.ndarray], float | None]:
    """(diagrams, own cap) of a fitted LossTopology or a ``{dim: diagram}`` mapping."""
    if isinstance(item, LossTopology):
        check_is_fitted(item)
        return dict(item.diagrams_), item.cap_
    if isinstance(item, Mapping):
        return {int(d): _as_diagram(v) for d, v in item.items()}, None
    raise TypeError(
        f"{name!r}: expected a fitted LossTopology or a {{dim: diagram}} mapping, "
        f"got {type(item).__name__}"
    )


def compare_networks(
    results: Mapping[str, Any],
    *,
    order: float = 1.0,
    cap: float | Literal["common"] | None = "common",
) -> dict[str, Any]:
    """Pairwise diagram distances and summary differences between networks (PAPERS.md B4).

    Args:
        results: ``name -> fitted LossTopology`` or ``name -> {dim: (n, 2) diagram}``, at
            least two entries.
        order: Wasserstein exponent.
        cap: cap for infinite deaths, used for the distances *and* the summaries of this
            comparison, so all its numbers share one convention. ``"common"``: the largest of
            the networks' caps (a LossTopology's ``cap_``, the largest loss; for a raw
            diagram, its largest finite value), so every network is read on the same loss
            scale. ``None``: infinite points are matched by birth (distance ``inf`` when the
            counts differ) and each summary uses the network's own cap.

    Returns:
        A dict with

        * ``"names"``: the names in order;
        * ``"dims"``: the homology dimensions compared (the union; a missing one is empty);
        * ``"bottleneck"``, ``"wasserstein"``: ``{dim: (N, N) symmetric matrix}`` in the
          order of ``names``, zero diagonal;
        * ``"summaries"``: ``{name: persistence_summary}``;
        * ``"summary_differences"``: ``{a: {b: {key: summaries[a][key] - summaries[b][key]}}}``
          for every ordered pair ``a != b``;
        * ``"cap"``: the cap used (``None`` when none).
    """
    if len(results) < 2:
        raise ValueError(f"compare_networks needs at least two networks, got {len(results)}")
    names = list(results)
    parsed = [_diagrams_of(n, results[n]) for n in names]
    dims = sorted({d for dgms, _ in parsed for d in dgms})
    diagrams = [{d: dgms.get(d, _empty_diagram()) for d in dims} for dgms, _ in parsed]
    own_caps = [
        own if own is not None else _default_cap(dg.values())
        for (_, own), dg in zip(parsed, diagrams, strict=True)
    ]
    if cap == "common":
        used_cap: float | None = max(own_caps)
    elif cap is None or isinstance(cap, (int, float)):
        used_cap = None if cap is None else float(cap)
    else:
        raise ValueError(f"cap must be a number, 'common' or None, got {cap!r}")

    n = len(names)
    bottleneck = {d: np.zeros((n, n)) for d in dims}
    wasserstein = {d: np.zeros((n, n)) for d in dims}
    for i in range(n):
        for j in range(i + 1, n):
            for d in dims:
                a, b = diagrams[i][d], diagrams[j][d]
                bn = diagram_distance(a, b, metric="bottleneck", cap=used_cap)
                ws = diagram_distance(a, b, metric="wasserstein", order=order, cap=used_cap)
                bottleneck[d][i, j] = bottleneck[d][j, i] = bn
                wasserstein[d][i, j] = wasserstein[d][j, i] = ws

    summaries = {
        name: persistence_summary(dg, cap=used_cap if used_cap is not None else own)
        for name, dg, own in zip(names, diagrams, own_caps, strict=True)
    }
    differences = {
        a: {
            b: {key: summaries[a][key] - summaries[b][key] for key in summaries[a]}
            for b in names
            if b != a
        }
        for a in names
    }
    return {
        "names": names,
        "dims": dims,
        "bottleneck": bottleneck,
        "wasserstein": wasserstein,
        "summaries": summaries,
        "summary_differences": differences,
        "cap": used_cap,
    }
