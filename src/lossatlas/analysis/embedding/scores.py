"""Scores that compare embeddings, every method scored the same way (PAPERS B2).

* ``trustworthiness`` and ``continuity`` (Venna & Kaski 2001): scikit-learn's trustworthiness,
  and the same with the roles of the two spaces swapped;
* ``demap`` (Moon et al. 2019): Spearman rho of embedding distances against geodesic distances
  on a *connected* kNN graph of the samples (:func:`connecting_knn`);
* ``purity_<label>``: kNN label purity in the embedding, by trajectory, jump size, direction;
* :func:`trajectory_preservation`, an order-only score, is kept as a function but not scored:
  a degenerate embedding that lays every trajectory on one line by epoch scores as well as a
  faithful one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import shortest_path
from scipy.stats import rankdata

from lossatlas.analysis._outofcore import DEFAULT_BLOCK_MEMORY, gram_of
from lossatlas.analysis.topology import smallest_connecting_k

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator: Any, X: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(X, **kwargs)


__all__ = [
    "connecting_knn",
    "continuity_score",
    "demap_score",
    "knn_purity",
    "score_embeddings",
    "trajectory_preservation",
    "trustworthiness_score",
]


def _high_distances(
    X_high: Any, metric: str, precomputed: bool, chunk_rows: int, block_memory: int
) -> np.ndarray:
    """``(S, S)`` distances between the high-dimensional samples, exact (from the Gram)."""
    if precomputed:
        dist = np.asarray(X_high, dtype=np.float64)
        if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
            raise ValueError(f"a precomputed distance matrix must be square, got {dist.shape}")
        return dist
    gram, _ = gram_of(X_high, chunk_rows, block_memory)
    return gram.distances(metric)  # type: ignore[arg-type]


def _low(X_low: Any, n_samples: int) -> np.ndarray:
    low = np.asarray(X_low, dtype=np.float64)
    if low.ndim != 2 or low.shape[0] != n_samples:
        raise ValueError(f"the embedding must have shape ({n_samples}, d), got {low.shape}")
    return low


def _pairwise(low: np.ndarray) -> np.ndarray:
    diff = low[:, None, :] - low[None, :, :]
    return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ (Pearson of average ranks); NaN when either side is constant."""
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def trustworthiness_score(
    X_high: Any,
    X_low: Any,
    k: int = 10,
    *,
    metric: str = "euclidean",
    precomputed: bool = False,
    chunk_rows: int = 32,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
) -> float:
    """Trustworthiness (Venna & Kaski 2001) of an embedding, in [0, 1], 1 is best.

    It penalises points that are among the ``k`` nearest embedding neighbours of a sample
    without being among its ``k`` nearest high-dimensional neighbours, by how far down the
    high-dimensional ranking they are. Computed by ``sklearn.manifold.trustworthiness`` on the
    exact high-dimensional distance matrix, which for a huge ``X_high`` comes from the streamed
    Gram matrix (no PCA, nothing ``S × D`` in memory).

    Args:
        X_high: ``(S, D)`` samples (numpy or zarr array), a :class:`Gram`, or with
            ``precomputed`` an ``(S, S)`` distance matrix.
        X_low: ``(S, d)`` embedding (Euclidean distances).
        k: neighbours; scikit-learn requires ``k < S / 2``.
        metric: high-dimensional metric: ``"euclidean"`` or ``"cosine"``.
    """
    from sklearn.manifold import trustworthiness

    dist = _high_distances(X_high, metric, precomputed, chunk_rows, block_memory)
    low = _low(X_low, dist.shape[0])
    if not 1 <= k < dist.shape[0] / 2:
        raise ValueError(f"k={k} must be at least 1 and below n_samples / 2 = {dist.shape[0] / 2}")
    return float(trustworthiness(dist, low, n_neighbors=int(k), metric="precomputed"))


def _euclidean_coordinates(dist: np.ndarray) -> np.ndarray:
    """``(S, r)`` coordinates whose Euclidean distances are ``dist`` (classical MDS, exact for
    Euclidean distances; for other metrics the nearest Euclidean configuration)."""
    squared = np.asarray(dist, dtype=np.float64) ** 2
    n = squared.shape[0]
    centring = np.eye(n) - 1.0 / n
    values, vectors = np.linalg.eigh(-0.5 * centring @ squared @ centring)
    keep = values > values.max() * 1e-12 if values.max() > 0 else values > 0
    return vectors[:, keep] * np.sqrt(values[keep])


def continuity_score(
    X_high: Any,
    X_low: Any,
    k: int = 10,
    *,
    metric: str = "euclidean",
    precomputed: bool = False,
    chunk_rows: int = 32,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
) -> float:
    """Continuity (Venna & Kaski 2001) of an embedding, in [0, 1], 1 is best.

    Trustworthiness with the roles of the spaces swapped: it penalises high-dimensional
    neighbours that the embedding tears away. ``sklearn.manifold.trustworthiness`` on the
    embedding's distances (precomputed) against exact coordinates of the samples (classical MDS
    of their distance matrix, which for Euclidean distances reproduces them exactly).
    Arguments as :func:`trustworthiness_score`.
    """
    dist = _high_distances(X_high, metric, precomputed, chunk_rows, block_memory)
    low = _low(X_low, dist.shape[0])
    return _continuity(_pairwise(low), _euclidean_coordinates(dist), k)


def _continuity(low_distances: np.ndarray, coordinates: np.ndarray, k: int) -> float:
    from sklearn.manifold import trustworthiness

    n = coordinates.shape[0]
    if not 1 <= k < n / 2:
        raise ValueError(f"k={k} must be at least 1 and below n_samples / 2 = {n / 2}")
    return float(
        trustworthiness(low_distances, coordinates, n_neighbors=int(k), metric="precomputed")
    )


def knn_purity(X_low: Any, labels: Any, k: int = 10) -> float:
    """kNN label purity of an embedding, in [0, 1]: the mean over samples of the share of its
    ``k`` nearest embedding neighbours (itself excluded) that share its label.

    ``X_low`` ``(S, d)``, ``labels`` ``(S,)`` (trajectory, jump size, direction, ...). A
    random layout scores about the labels' collision rate ``sum_c p_c^2``.
    """
    from sklearn.neighbors import NearestNeighbors

    low = np.asarray(X_low, dtype=np.float64)
    tags = np.asarray(labels)
    if low.ndim != 2 or tags.shape != (low.shape[0],):
        raise ValueError(f"labels must have shape ({low.shape[0]},), got {tags.shape}")
    if not 1 <= k < low.shape[0]:
        raise ValueError(f"k={k} must be between 1 and n_samples - 1 = {low.shape[0] - 1}")
    index = NearestNeighbors(n_neighbors=int(k) + 1).fit(low).kneighbors(return_distance=False)
    # kneighbors() without X leaves each sample out of its own neighbours: k + 1 asked, k kept.
    neighbours = index[:, : int(k)]
    return float(np.mean(tags[neighbours] == tags[:, None]))


def _knn_edges(dist: np.ndarray, knn: int) -> sparse.csr_matrix:
    """The symmetrised kNN graph of a distance matrix, edges weighted by their distance."""
    n = dist.shape[0]
    masked = dist.copy()
    np.fill_diagonal(masked, np.inf)
    neighbours = np.argpartition(masked, knn - 1, axis=1)[:, :knn]
    rows = np.repeat(np.arange(n), knn)
    cols = neighbours.ravel()
    # A tiny floor keeps zero-distance edges (duplicate samples) in the sparse graph.
    weights = np.maximum(dist[rows, cols], np.finfo(float).tiny)
    graph = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))
    return graph.maximum(graph.T)


def connecting_knn(dist: Any, knn: int) -> int:
    """The smallest ``k >= knn`` whose symmetrised kNN graph of ``dist`` ``(S, S)`` is
    connected (bisection: connectivity only grows with ``k``; ``S - 1`` always connects)."""
    from scipy.sparse.csgraph import connected_components

    d = np.asarray(dist, dtype=np.float64)
    n = d.shape[0]
    if not 1 <= knn < n:
        raise ValueError(f"knn={knn} must be between 1 and n_samples - 1 = {n - 1}")

    def connected(k: int) -> bool:
        return bool(connected_components(_knn_edges(d, k), directed=False)[0] == 1)

    return smallest_connecting_k(connected, int(knn), n - 1)


def _trajectories(trajectory_ids: Any, order: Any, n_samples: int) -> list[np.ndarray]:
    """Sample indices of each trajectory, sorted by ``order``."""
    ids = np.zeros(n_samples, dtype=int) if trajectory_ids is None else np.asarray(trajectory_ids)
    steps = np.arange(n_samples) if order is None else np.asarray(order)
    if ids.shape != (n_samples,) or steps.shape != (n_samples,):
        raise ValueError(f"trajectory_ids and order must have shape ({n_samples},)")
    groups = []
    for label in np.unique(ids):
        members = np.flatnonzero(ids == label)
        positions = steps[members]
        if np.unique(positions).size != positions.size:
            raise ValueError(f"trajectory {label!r} has repeated order values")
        groups.append(members[np.argsort(positions, kind="stable")])
    return groups


def trajectory_preservation(
    X_high: Any,
    X_low: Any,
    trajectory_ids: Any = None,
    order: Any = None,
    *,
    reference: Literal["arc", "ambient"] = "arc",
    metric: str = "euclidean",
    precomputed: bool = False,
    chunk_rows: int = 32,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
) -> float:
    """How faithfully an embedding keeps each trajectory's progression, in [-1, 1].

    Definition: for each trajectory (samples sharing a ``trajectory_ids`` value, ordered by
    ``order``, e.g. retraining epoch), take all pairs of its samples and compute Spearman's ρ
    between their embedding distance and their parameter-space separation; return the mean ρ
    over trajectories (those of fewer than 3 samples, or with constant distances, are
    skipped). The separation is

    * ``reference="arc"`` (default): the along-trajectory distance, i.e. the summed
      parameter-space lengths of the steps between the two samples. ρ = 1 when distances in the
      embedding grow monotonically with the path travelled, i.e. the trajectory is drawn in
      order and without folding back, which is what one reads off a trajectory plot.
    * ``reference="ambient"``: the straight parameter-space distance between the two samples.

    Args:
        X_high: ``(S, D)`` samples (numpy or zarr array), a :class:`Gram`, or with
            ``precomputed`` an ``(S, S)`` distance matrix.
        X_low: ``(S, d)`` embedding.
        trajectory_ids: ``(S,)`` trajectory labels; None means one trajectory.
        order: ``(S,)`` position along the trajectory; None means row order.
        metric: parameter-space metric, ``"euclidean"`` or ``"cosine"``.

    Returns:
        The mean ρ, or NaN if no trajectory has a defined ρ.
    """
    if reference not in ("arc", "ambient"):
        raise ValueError(f"reference must be 'arc' or 'ambient', got {reference!r}")
    dist = _high_distances(X_high, metric, precomputed, chunk_rows, block_memory)
    low = _low(X_low, dist.shape[0])
    rhos = []
    for members in _trajectories(trajectory_ids, order, dist.shape[0]):
        if members.size < 3:
            continue
        sub = dist[np.ix_(members, members)]
        if reference == "arc":
            steps = np.diag(sub, k=1)
            position = np.concatenate([[0.0], np.cumsum(steps)])
            sub = np.abs(position[:, None] - position[None, :])
        upper = np.triu_indices(members.size, k=1)
        rho = _spearman(sub[upper], _pairwise(low[members])[upper])
        if np.isfinite(rho):
            rhos.append(rho)
    return float(np.mean(rhos)) if rhos else float("nan")


def demap_score(
    X_high: Any,
    X_low: Any,
    *,
    knn: int = 10,
    metric: str = "euclidean",
    precomputed: bool = False,
    chunk_rows: int = 32,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
) -> float:
    """DEMaP: Spearman rho of embedding distances vs geodesic distances on a connected graph.

    The geodesic distance of two samples is the shortest path through the symmetrised graph
    joining every sample to its ``k`` nearest neighbours (edges weighted by their
    parameter-space distance), with ``k`` the smallest ``>= knn`` that connects the graph
    (:func:`connecting_knn`), as DEMaP's definition needs every pair to have one.
    """
    dist = _high_distances(X_high, metric, precomputed, chunk_rows, block_memory)
    low = _low(X_low, dist.shape[0])
    graph = _knn_edges(dist, connecting_knn(dist, knn))
    geodesic = shortest_path(graph, method="D", directed=False)
    upper = np.triu_indices(dist.shape[0], k=1)
    return _spearman(geodesic[upper], _pairwise(low)[upper])


def score_embeddings(
    X: Any,
    embeddings: Mapping[str, Any],
    *,
    labels: Mapping[str, Any] | None = None,
    k: int = 10,
    metric: str = "euclidean",
    precomputed: bool = False,
    chunk_rows: int = 32,
    block_memory: int = DEFAULT_BLOCK_MEMORY,
) -> dict[str, dict[str, float]]:
    """Score every embedding of the same samples the same way, against the exact geometry.

    Args:
        X: ``(S, D)`` samples (numpy or zarr array, streamed once), a :class:`Gram` (reused,
            no pass), or with ``precomputed`` an ``(S, S)`` distance matrix.
        embeddings: method -> ``(S, d)`` coordinates (e.g. from :func:`embed_all`).
        labels: name -> ``(S,)`` labels (e.g. ``trajectory``, ``size``, ``direction``): one
            ``purity_<name>`` score each (:func:`knn_purity`).
        k: neighbours of every score (DEMaP's graph grows it until it connects).
        metric: parameter-space metric, ``"euclidean"`` (default: the geometry of weight
            space) or ``"cosine"`` (the one PHATE's graph uses).

    Returns:
        method -> {"trustworthiness", "continuity", "demap", "purity_<name>" per label}.
    """
    dist = _high_distances(X, metric, precomputed, chunk_rows, block_memory)
    coordinates = _euclidean_coordinates(dist)  # once, for every continuity
    geodesic = shortest_path(_knn_edges(dist, connecting_knn(dist, k)), method="D")
    upper = np.triu_indices(dist.shape[0], k=1)
    out: dict[str, dict[str, float]] = {}
    for name, coords in embeddings.items():
        low = _low(coords, dist.shape[0])
        pairwise = _pairwise(low)
        row = {
            "trustworthiness": trustworthiness_score(dist, low, k, precomputed=True),
            "continuity": _continuity(pairwise, coordinates, k),
            "demap": _spearman(geodesic[upper], pairwise[upper]),
        }
        for label, values in (labels or {}).items():
            row[f"purity_{label}"] = knn_purity(low, values, k)
        out[name] = row
    return out
