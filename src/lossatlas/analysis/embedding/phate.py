"""PHATE, seeded, following scikit-learn's estimator contract (PAPERS B2)."""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any, Literal, cast

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from lossatlas.analysis._outofcore import (
    DEFAULT_BLOCK_MEMORY,
    Gram,
    Metric,
    gram_of,
    is_out_of_core,
)
from lossatlas.analysis.embedding.pca import OutOfCorePCA
from lossatlas.analysis.topology import smallest_connecting_k

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator: Any, X: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(X, **kwargs)


__all__ = ["PHATEEmbedding"]


class _BelowErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _quiet_graphtools(function: Any, *args: Any) -> Any:
    """Call ``function`` with graphtools' task logger silenced below errors.

    PHATE's SGD-MDS reports "may not have converged" through that logger even with
    ``verbose=0``; in a batch run it is noise on the terminal (the stress check is PHATE's own
    heuristic, and the embedding is returned regardless). A filter, not a level: PHATE resets
    the logger's level from its ``verbose`` inside ``fit_transform``.
    """
    import tasklogger

    logger = tasklogger.get_tasklogger("graphtools").logger
    quiet = _BelowErrors()
    logger.addFilter(quiet)
    try:
        return function(*args)
    finally:
        logger.removeFilter(quiet)


def _components(operator: Any) -> int:
    """Connected components of a fitted PHATE operator's graph."""
    from scipy.sparse.csgraph import connected_components

    return int(connected_components(operator.graph.kernel, directed=False)[0])


class PHATEEmbedding(BaseEstimator):
    """Seeded PHATE of parameter vectors, fed from a streamed Gram matrix.

    Defaults are the paper's (PAPERS B2): knn=5, decay=40, t="auto", gamma=1, n_pca=100,
    cosine distances for the kNN graph and for the MDS of the potential; ``random_state``
    seeds the graph and MDS, so the same seed gives the same embedding (the released code
    was unseeded).

    How ``X`` reaches PHATE (``reduction``):

    * ``"pca"`` (default): the first ``n_pca`` PCA scores (exact, from the Gram matrix; see
      :class:`OutOfCorePCA`), then PHATE's graph with ``knn_dist`` on those scores. This is what
      ``phate.PHATE(n_pca=100, knn_dist="cosine")`` does on the raw matrix when ``n_pca`` is
      below ``min(S, D)``: graphtools first runs a centred (randomized) PCA and measures cosine
      distances between the *scores*. So "cosine on the raw vectors" in the paper is, in fact,
      cosine between centred vectors projected on their top-100 principal axes. The equivalence
      caveat: cosine distances of centred PCA scores are not cosine distances of the raw
      vectors (the centring changes angles, and dropped components change norms). Set
      ``center=False`` to use an uncentred SVD instead; with ``n_pca ≥ rank`` its scores have
      exactly the raw vectors' inner products, hence their cosine distances.
    * ``"gram"``: exact pairwise ``knn_dist`` distances (``"euclidean"`` or ``"cosine"``,
      of the centred vectors if ``center``) from the Gram matrix, given to PHATE as a
      precomputed distance matrix, so no PCA at all. graphtools then builds its exact kernel
      instead of the thresholded kNN one (entries below 1e-4 are kept), a tiny difference.

    ``fit`` accepts an ``(S, D)`` numpy or zarr array, precomputed PCA scores ``(S, k)`` (when
    ``k ≤ n_pca`` no further reduction happens, apart from the re-centring, which does not
    change centred scores), or a :class:`Gram`. The diffusion potential is exact (no
    landmarks), so ``diff_potential_`` is ``(S, S)``.

    Attributes (after fit):
        embedding_: ``(S, n_components)`` PHATE coordinates.
        diff_potential_: ``(S, S)`` diffusion potential (input to the topology stage).
        t_: the diffusion time used (the knee of the von Neumann entropy for ``t="auto"``).
        graph_components_: connected components of PHATE's kNN graph (1: connected; more:
            PHATE places the pieces relative to each other arbitrarily).
        phate_: the fitted ``phate.PHATE`` operator (its ``graph`` and ``diff_op``).
        n_features_in_: ``D``.
    """

    def __init__(
        self,
        n_components: int = 2,
        *,
        knn: int = 5,
        decay: float | None = 40,
        t: int | Literal["auto"] = "auto",
        gamma: float = 1,
        n_pca: int | None = 100,
        knn_dist: str = "cosine",
        mds_dist: str = "cosine",
        mds_solver: Literal["sgd", "smacof"] = "sgd",
        reduction: Literal["pca", "gram"] = "pca",
        center: bool = True,
        random_state: int | None = 0,
        n_jobs: int = 1,
        chunk_rows: int = 32,
        block_memory: int = DEFAULT_BLOCK_MEMORY,
    ) -> None:
        self.n_components = n_components
        self.knn = knn
        self.decay = decay
        self.t = t
        self.gamma = gamma
        self.n_pca = n_pca
        self.knn_dist = knn_dist
        self.mds_dist = mds_dist
        self.mds_solver = mds_solver
        self.reduction = reduction
        self.center = center
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.chunk_rows = chunk_rows
        self.block_memory = block_memory

    def _graph_input(self, X: Any) -> tuple[np.ndarray, bool]:
        """What PHATE's graph is built from: (scores or distances, is_precomputed)."""
        if isinstance(X, Gram):
            gram = X
        elif is_out_of_core(X):
            gram, _ = gram_of(X, int(self.chunk_rows), int(self.block_memory))
        else:
            data = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
            gram, _ = gram_of(data, int(self.chunk_rows), int(self.block_memory))
        self.n_features_in_ = gram.n_features
        n_samples = gram.n_samples
        if n_samples <= self.knn:
            raise ValueError(f"PHATE needs more samples ({n_samples}) than knn ({self.knn})")
        if self.reduction == "gram":
            if self.knn_dist not in ("euclidean", "cosine"):
                raise ValueError(
                    "reduction='gram' derives distances from the Gram matrix: knn_dist must "
                    f"be 'euclidean' or 'cosine', got {self.knn_dist!r}"
                )
            metric = cast(Metric, self.knn_dist)  # checked just above
            return gram.distances(metric, center=bool(self.center)), True
        if self.reduction != "pca":
            raise ValueError(f"reduction must be 'pca' or 'gram', got {self.reduction!r}")
        # A centred matrix of S rows has rank at most S - 1.
        limit = min(n_samples - int(bool(self.center)), gram.n_features)
        k = limit if self.n_pca is None else max(1, min(int(self.n_pca), limit))
        pca = OutOfCorePCA(k, center=bool(self.center), method="exact", compute_components=False)
        return pca.fit(gram).scores_, False

    def _operator(self, precomputed: bool, knn: int) -> Any:
        import phate  # lazily: importing it takes a second or two

        return phate.PHATE(
            n_components=self.n_components,
            knn=knn,
            decay=self.decay,
            n_landmark=None,  # exact (S, S) potential: S is hundreds, and topology needs it
            t=self.t,
            gamma=self.gamma,
            n_pca=None,  # any reduction was done above, streamed
            mds_solver=self.mds_solver,
            knn_dist="precomputed_distance" if precomputed else self.knn_dist,
            mds_dist=self.mds_dist,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            verbose=0,
        )

    def connecting_knn(self, X: Any) -> int:
        """The smallest ``knn >= self.knn`` for which PHATE's graph of ``X`` is connected.

        Bisection over ``[knn, S - 1]`` (a graph with more neighbours keeps every edge of one
        with fewer), building only the graph for each candidate (no MDS).
        """
        data, precomputed = self._graph_input(X)
        n = data.shape[0]

        def connected(knn: int) -> bool:
            operator = self._operator(precomputed, knn)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # graphtools warns of the split it finds
                _quiet_graphtools(operator.fit, data)
            return _components(operator) == 1

        return smallest_connecting_k(connected, int(self.knn), n - 1)

    def fit(self, X: Any, y: Any = None) -> PHATEEmbedding:
        """Embed ``X`` (``(S, D)`` array, zarr array, PCA scores or :class:`Gram`); ``self``."""
        if self.t != "auto" and (not isinstance(self.t, numbers.Integral) or self.t < 1):
            raise ValueError(f"t must be 'auto' or a positive integer, got {self.t!r}")
        data, precomputed = self._graph_input(X)
        operator = self._operator(precomputed, int(self.knn))
        embedding = _quiet_graphtools(operator.fit_transform, data)
        self.graph_components_ = _components(operator)
        self.embedding_ = np.asarray(embedding, dtype=np.float64)
        self.diff_potential_ = np.asarray(operator.diff_potential, dtype=np.float64)
        self.t_ = int(operator.optimal_t) if self.t == "auto" else int(self.t)
        self.phate_ = operator
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return ``embedding_`` ``(S, n_components)``."""
        return self.fit(X, y).embedding_

    def transform(self, X: Any = None) -> np.ndarray:
        """The embedding of the fitted samples; PHATE does not place new samples."""
        check_is_fitted(self, "embedding_")
        if X is not None:
            raise ValueError(
                "PHATEEmbedding cannot embed new samples; refit on all of them and call "
                "transform() without arguments"
            )
        return self.embedding_
