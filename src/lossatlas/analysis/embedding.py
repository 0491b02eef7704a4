"""Embeddings of jump-and-retrain samples and scores that compare them (PAPERS B2).

The samples are ``S`` flat parameter vectors, ``X`` of shape ``(S, D)``: in the paper 640
vectors of 1.47M floats, 3.8 GB as float32, so ``X`` may be a ``zarr.Array`` read from the atlas
store and is never loaded whole. Everything below needs only pairwise quantities between the
``S`` samples, and those follow *exactly* from the ``S × S`` Gram matrix, which one streamed,
memory-bounded pass computes (:func:`streamed_gram`, see :mod:`lossatlas.analysis._outofcore`):

* PCA scores are the eigenvectors of the centred Gram matrix scaled by the square roots of its
  eigenvalues (:class:`OutOfCorePCA`), so no ``D × k`` factor is ever needed for them;
* Euclidean and cosine distances, which the quality scores use, are exact (no PCA in
  between);
* projections onto the two directions of the Li et al. plane come from the same pass.

Methods compared by :func:`embed_all` (all return ``(S, 2)`` float64 arrays):

* ``"phate"``: :class:`PHATEEmbedding`, with the paper's settings (cosine kNN graph and cosine
  MDS, knn=5, decay=40, t="auto", gamma=1, n_pca=100) and a seed, which the released code
  lacked.
* ``"pca"``: the first two PCA scores of the same samples (centred).
* ``"tsne"``, ``"umap"``: scikit-learn's t-SNE and umap-learn's UMAP (optional extra
  ``lossatlas[umap]``) on the PCA scores, with the same metric as PHATE's graph, so the
  comparison varies the method and not the metric.
* ``"random_plane"``: coordinates of ``x - θ*`` in the plane of two directions given by the
  caller (filter-normalised ones, built where ``torch.nn`` is allowed) or Gaussian ones.

Scores (:func:`score_embeddings`), each a float, higher is better:

* ``trustworthiness``: scikit-learn's trustworthiness with ``k`` neighbours, on exact
  high-dimensional distances (Venna & Kaski 2001): 1 when no embedding neighbour is a false one.
* ``trajectory_preservation``: how well each trajectory's progression survives (see
  :func:`trajectory_preservation`).
* ``demap``: Spearman correlation of the embedding distances with geodesic distances on the
  kNN graph of the samples (DEMaP, Moon et al. 2019, with the samples' own kNN graph standing
  in for the noiseless ground truth).

Nothing here imports torch; inputs are numpy arrays (or array-likes, zarr arrays, torch tensors
converted on the way in), outputs are numpy arrays and floats.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.linalg import eigh
from scipy.sparse.csgraph import shortest_path
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.extmath import randomized_svd
from sklearn.utils.validation import check_is_fitted

from lossatlas.analysis._outofcore import (
    Gram,
    _slices,
    as_source,
    iter_rows,
    read_rows,
    streamed_gram,
)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator: Any, X: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(X, **kwargs)


__all__ = [
    "ALL_METHODS",
    "Gram",
    "OutOfCorePCA",
    "PHATEEmbedding",
    "available_methods",
    "demap_score",
    "embed_all",
    "score_embeddings",
    "streamed_gram",
    "trajectory_preservation",
    "trustworthiness_score",
]

ALL_METHODS = ("phate", "pca", "tsne", "umap", "random_plane")
_DEFAULT_BLOCK_MEMORY = 512 * 2**20
_UMAP_MISSING = (
    "UMAP needs the optional extra umap-learn: pip install 'lossatlas[umap]' "
    "(or leave 'umap' out of methods)"
)


# --------------------------------------------------------------------------- inputs


def _is_out_of_core(X: Any) -> bool:
    """Whether ``X`` is a chunked on-disk array (zarr, h5py) to be read in blocks only."""
    return (
        not isinstance(X, np.ndarray)
        and not sparse.issparse(X)
        and hasattr(X, "chunks")
        and hasattr(X, "shape")
        and hasattr(X, "dtype")
        and len(X.shape) == 2
    )


def _gram_of(X: Any, chunk_rows: int, block_memory: int, vectors: Any = None) -> tuple[Gram, Any]:
    """The Gram of ``X`` (reused if ``X`` is one) and the source it was read from (or None)."""
    if isinstance(X, Gram):
        return X, None
    source = as_source(X)
    return streamed_gram(
        source, vectors=vectors, chunk_rows=chunk_rows, block_memory=block_memory
    ), source


def _sign_flip(scores: np.ndarray) -> np.ndarray:
    # Eigenvectors have no sign; fix it so the largest |score| of each component is positive,
    # which makes results independent of the eigensolver.
    idx = np.argmax(np.abs(scores), axis=0)
    signs = np.sign(scores[idx, np.arange(scores.shape[1])])
    signs[signs == 0] = 1.0
    return signs


# --------------------------------------------------------------------------- PCA


class OutOfCorePCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """PCA of an ``(S, D)`` matrix read in blocks, for ``S`` up to thousands and ``D`` huge.

    ``method="exact"`` (default) and ``"randomized"`` both work on the ``S × S`` Gram matrix
    from one streamed pass (:func:`streamed_gram`): its centred form ``Xc Xcᵀ = U Λ Uᵀ`` gives
    the scores ``U Λ^½`` directly. Memory is bounded by ``block_memory`` plus ``S²`` floats,
    however large ``D`` is (640 × 1.5M float32 samples fit in well under 2 GB), which is why
    the Gram route is used. ``"exact"`` then takes a dense symmetric eigensolver: for ``S`` in
    the hundreds it costs milliseconds and gives the exact PCA, so it is the default.
    ``"randomized"`` uses a randomized range finder (Halko et al. 2011) seeded by
    ``random_state`` on the same Gram matrix; it only pays for ``S`` in the tens of thousands,
    and is approximate for slowly decaying spectra (as scikit-learn's randomized PCA is).
    ``components_`` (``k × D``, 600 MB for k = 100 and D = 1.5M in float32) needs a second
    streamed pass and is only computed when ``compute_components`` is true; :meth:`transform`
    needs it, :attr:`scores_` does not.

    ``method="incremental"`` runs scikit-learn's ``IncrementalPCA`` on row batches of at least
    ``n_components`` rows. It is kept as an independent cross-check for moderate ``D``: each
    of its updates stacks and decomposes a ``(k + batch) × D`` float64 matrix, several GB for
    the paper's D; it always centres, and it is exact only when the data have rank ≤ k (it
    keeps k components between batches).

    Parameters:
        n_components: number of components ``k`` (at most ``min(S, D)``).
        chunk_rows: rows per streamed read (rounded to whole storage chunks of a zarr array).
        center: subtract the column means (PCA); if false, a truncated SVD of ``X`` itself.
        method: ``"exact"``, ``"randomized"`` or ``"incremental"``.
        n_oversamples, n_iter: oversampling and power iterations of the randomized solver.
        random_state: seed of the randomized solver.
        block_memory: bytes of ``X`` held at once by the Gram pass.
        compute_components: also compute ``components_`` (second pass), needed by transform.

    Attributes (after fit):
        scores_: ``(S, k)`` projections of the training samples on the components.
        explained_variance_: ``(k,)`` ``λ / (S - 1)``.
        explained_variance_ratio_: ``(k,)`` ``λ / trace``: share of the total variance (or of
            the total sum of squares when ``center`` is false).
        singular_values_: ``(k,)`` ``λ^½``.
        mean_: ``(D,)`` column means (zeros when ``center`` is false).
        components_: ``(k, D)`` unit principal axes, or None when not computed. Axes of zero
            variance are left as zero rows.
        gram_: the :class:`Gram` of the pass (None for ``"incremental"``); reuse it for
            distances without reading ``X`` again.
        n_features_in_, n_samples_: ``D`` and ``S``.

    ``fit`` also accepts a precomputed :class:`Gram` in place of ``X`` (then no components).
    """

    def __init__(
        self,
        n_components: int = 100,
        *,
        chunk_rows: int = 32,
        center: bool = True,
        method: Literal["exact", "randomized", "incremental"] = "exact",
        n_oversamples: int = 10,
        n_iter: int = 4,
        random_state: int | None = 0,
        block_memory: int = _DEFAULT_BLOCK_MEMORY,
        compute_components: bool = True,
    ) -> None:
        self.n_components = n_components
        self.chunk_rows = chunk_rows
        self.center = center
        self.method = method
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.random_state = random_state
        self.block_memory = block_memory
        self.compute_components = compute_components

    # ------------------------------------------------------------------ fitting

    def _check_params(self, n_samples: int, n_features: int) -> int:
        if self.method not in ("randomized", "exact", "incremental"):
            raise ValueError(
                f"method must be 'randomized', 'exact' or 'incremental', got {self.method!r}"
            )
        k = self.n_components
        if not isinstance(k, numbers.Integral) or isinstance(k, bool):
            raise ValueError(f"n_components must be an integer, got {k!r}")
        limit = min(n_samples, n_features)
        if not 1 <= k <= limit:
            raise ValueError(
                f"n_components={k} must be between 1 and min(n_samples, n_features)={limit}"
            )
        if isinstance(self.chunk_rows, bool) or int(self.chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be a positive integer, got {self.chunk_rows!r}")
        return int(k)

    def _input(self, X: Any) -> tuple[Any, Gram | None]:
        """Validate ``X``: a Gram, an out-of-core array, or in-memory data (sklearn checks)."""
        if isinstance(X, Gram):
            self.n_features_in_ = X.n_features
            return None, X
        if _is_out_of_core(X):
            source = as_source(X)
            if source.shape[0] < 2:
                raise ValueError(
                    f"Found array with {source.shape[0]} sample(s) while a minimum of 2 "
                    "is required."
                )
            self.n_features_in_ = int(source.shape[1])
            return source, None
        data = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        return data, None

    def fit(self, X: Any, y: Any = None) -> OutOfCorePCA:
        """Fit on ``X``: ``(S, D)`` numpy/zarr array, or a :class:`Gram`. Returns ``self``."""
        source, gram = self._input(X)
        n_samples = gram.n_samples if gram is not None else int(source.shape[0])
        k = self._check_params(n_samples, self.n_features_in_)
        if self.method == "incremental":
            if source is None:
                raise ValueError("method='incremental' needs the data, not a Gram matrix")
            self._fit_incremental(source, k)
            return self
        if gram is None:
            gram = streamed_gram(
                source, chunk_rows=int(self.chunk_rows), block_memory=int(self.block_memory)
            )
        kernel = gram.centred() if self.center else gram.raw()
        values, vectors = self._eigen(kernel, k)
        values = np.maximum(values, 0.0)
        scores = vectors * np.sqrt(values)
        signs = _sign_flip(scores)
        scores *= signs
        vectors = vectors * signs
        total = float(np.trace(kernel))
        self.n_samples_ = n_samples
        self.gram_ = gram
        self.scores_ = scores
        self.singular_values_ = np.sqrt(values)
        self.explained_variance_ = values / (n_samples - 1)
        self.explained_variance_ratio_ = values / total if total > 0 else np.zeros_like(values)
        self.mean_ = gram.mean.copy() if self.center else np.zeros(gram.n_features)
        self.components_ = None
        if self.compute_components and source is not None:
            self.components_ = self._components(source, vectors, values)
        return self

    def _eigen(self, kernel: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` eigenpairs of the PSD ``(S, S)`` kernel, eigenvalues descending."""
        n = kernel.shape[0]
        if self.method == "exact" or k >= n:
            values, vectors = eigh(kernel, subset_by_index=[n - k, n - 1])
            return values[::-1], vectors[:, ::-1]
        # For a PSD matrix the SVD is the eigendecomposition.
        vectors, values, _ = randomized_svd(
            kernel,
            k,
            n_oversamples=int(self.n_oversamples),
            n_iter=int(self.n_iter),
            random_state=self.random_state,
        )
        return values, vectors

    def _components(self, source: Any, vectors: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``components_ = Λ^-½ Uᵀ Xc`` (k, D), accumulated over row chunks (second pass)."""
        tol = values.max(initial=0.0) * max(vectors.shape) * np.finfo(float).eps
        inv = np.where(values > tol, 1.0 / np.sqrt(np.where(values > tol, values, 1.0)), 0.0)
        weights = vectors * inv  # (S, k)
        n_features = int(source.shape[1])
        dtype = np.float32 if np.dtype(source.dtype) == np.float32 else np.float64
        comps = np.zeros((weights.shape[1], n_features), dtype=dtype)
        step = max(1, (64 * 2**20) // (8 * max(1, int(self.chunk_rows))))
        for rows, block in iter_rows(source, int(self.chunk_rows)):
            w = weights[rows].T
            for cols in _slices(n_features, step):
                part = block[:, cols].astype(np.float64) - self.mean_[cols]
                comps[:, cols] += (w @ part).astype(dtype, copy=False)
        return comps

    def _fit_incremental(self, source: Any, k: int) -> None:
        from sklearn.decomposition import IncrementalPCA

        if not self.center:
            raise ValueError("method='incremental' always centres; use center=True")
        n_samples = int(source.shape[0])
        batch = max(int(self.chunk_rows), k)
        # IncrementalPCA needs >= k rows per batch: fold a short last batch into the previous.
        bounds = [*range(0, n_samples, batch), n_samples]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < k:
            del bounds[-2]
        batches = [slice(a, b) for a, b in itertools.pairwise(bounds)]
        ipca = IncrementalPCA(n_components=k)
        for rows in batches:
            ipca.partial_fit(read_rows(source, rows, dtype=np.float64))
        scores = np.concatenate([ipca.transform(read_rows(source, r)) for r in batches])
        signs = _sign_flip(scores)
        self.n_samples_ = n_samples
        self.gram_ = None
        self.scores_ = scores * signs
        self.components_ = ipca.components_ * signs[:, None]
        self.mean_ = ipca.mean_
        self.singular_values_ = ipca.singular_values_
        self.explained_variance_ = ipca.explained_variance_
        self.explained_variance_ratio_ = ipca.explained_variance_ratio_

    # ------------------------------------------------------------------ transforming

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return ``scores_`` ``(S, k)`` (no second pass over ``X``)."""
        return self.fit(X, y).scores_

    def transform(self, X: Any) -> np.ndarray:
        """Project ``X`` ``(n, D)`` onto the components: ``(n, k)``, streamed if out-of-core."""
        check_is_fitted(self, "scores_")
        if self.components_ is None:
            raise ValueError(
                "this OutOfCorePCA was fitted without components (compute_components=False "
                "or a Gram input); use scores_ for the training samples or refit"
            )
        comps = self.components_
        if _is_out_of_core(X):
            source = as_source(X)
            if source.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {source.shape[1]} features, but OutOfCorePCA is expecting "
                    f"{self.n_features_in_} features as input"
                )
            out = np.zeros((int(source.shape[0]), comps.shape[0]))
            step = max(1, (64 * 2**20) // (8 * max(comps.shape[0], int(self.chunk_rows))))
            for rows, block in iter_rows(source, int(self.chunk_rows)):
                for cols in _slices(comps.shape[1], step):
                    part = block[:, cols].astype(np.float64) - self.mean_[cols]
                    out[rows] += part @ comps[:, cols].astype(np.float64).T
            return out
        data = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        centred = data - self.mean_.astype(data.dtype, copy=False)
        return centred @ comps.T.astype(data.dtype, copy=False)

    @property
    def _n_features_out(self) -> int:
        return int(self.scores_.shape[1])


# --------------------------------------------------------------------------- PHATE


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
        block_memory: int = _DEFAULT_BLOCK_MEMORY,
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
        elif _is_out_of_core(X):
            gram, _ = _gram_of(X, int(self.chunk_rows), int(self.block_memory))
        else:
            data = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
            gram, _ = _gram_of(data, int(self.chunk_rows), int(self.block_memory))
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
            return gram.distances(self.knn_dist, center=bool(self.center)), True
        if self.reduction != "pca":
            raise ValueError(f"reduction must be 'pca' or 'gram', got {self.reduction!r}")
        # A centred matrix of S rows has rank at most S - 1.
        limit = min(n_samples - int(bool(self.center)), gram.n_features)
        k = limit if self.n_pca is None else max(1, min(int(self.n_pca), limit))
        pca = OutOfCorePCA(k, center=bool(self.center), method="exact", compute_components=False)
        return pca.fit(gram).scores_, False

    def fit(self, X: Any, y: Any = None) -> PHATEEmbedding:
        """Embed ``X`` (``(S, D)`` array, zarr array, PCA scores or :class:`Gram`); ``self``."""
        import phate  # lazily: importing it takes a second or two

        if self.t != "auto" and (not isinstance(self.t, numbers.Integral) or self.t < 1):
            raise ValueError(f"t must be 'auto' or a positive integer, got {self.t!r}")
        data, precomputed = self._graph_input(X)
        operator = phate.PHATE(
            n_components=self.n_components,
            knn=self.knn,
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
        embedding = _quiet_graphtools(operator.fit_transform, data)
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


# --------------------------------------------------------------------------- all methods


def available_methods() -> tuple[str, ...]:
    """The methods :func:`embed_all` can run here (``"umap"`` only if umap-learn is there)."""
    have_umap = importlib.util.find_spec("umap") is not None
    return tuple(m for m in ALL_METHODS if m != "umap" or have_umap)


def _import_umap() -> Any:
    if importlib.util.find_spec("umap") is None:
        raise ImportError(_UMAP_MISSING)
    with warnings.catch_warnings():
        # umap's __init__ warns that TensorFlow (for ParametricUMAP, unused here) is missing.
        warnings.filterwarnings("ignore", message=".*Tensorflow.*", category=ImportWarning)
        import umap
    return umap


def _gaussian_directions(n_features: int, random_state: int | None) -> np.ndarray:
    """Two unit Gaussian directions ``(2, D)`` from a seed of their own (no global state)."""
    seed = [0 if random_state is None else int(random_state), 0x706C616E]  # "plan"
    directions = np.random.default_rng(seed).standard_normal((2, n_features))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _plane_coordinates(
    gram: Gram, directions: np.ndarray, center: Any, *, rescale: bool
) -> np.ndarray:
    """Least-squares coordinates ``(α, β)`` with ``x ≈ θ* + α d₁ + β d₂``: ``(S, 2)``.

    Least squares (not plain dot products) so the coordinates are those of a Li et al. plot
    ``f(θ* + α d₁ + β d₂)`` even though the directions are not orthonormal.
    """
    if gram.projections is None or gram.vectors is None:
        raise ValueError("the Gram matrix was streamed without the plane directions")
    theta = gram.mean if center is None else np.asarray(center, dtype=np.float64).ravel()
    if theta.shape != (gram.n_features,):
        raise ValueError(f"center must have shape ({gram.n_features},), got {theta.shape}")
    offsets = gram.projections - (directions @ theta)[None, :]
    coords = np.linalg.solve(directions @ directions.T, offsets.T).T
    if rescale:
        # Gaussian directions get the norm of θ*, as filter normalisation roughly gives, so
        # α = 1 is a step as long as the weights themselves (Li et al.'s units).
        norm = float(np.linalg.norm(theta))
        if norm > 0:
            coords = coords / norm
    return coords


def _tsne(scores: np.ndarray, metric: str, random_state: int | None) -> np.ndarray:
    from sklearn.manifold import TSNE

    n = scores.shape[0]
    # Perplexity must stay below the number of samples; 30 is scikit-learn's default.
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
    model = TSNE(2, perplexity=perplexity, metric=metric, init="pca", random_state=random_state)
    return np.asarray(model.fit_transform(scores), dtype=np.float64)


def _umap(scores: np.ndarray, metric: str, random_state: int | None) -> np.ndarray:
    umap = _import_umap()
    # n_jobs=1: umap ignores (and warns about) parallelism when seeded.
    model = umap.UMAP(
        n_components=2,
        n_neighbors=min(15, scores.shape[0] - 1),
        metric=metric,
        random_state=random_state,
        n_jobs=1,
    )
    return np.asarray(model.fit_transform(scores), dtype=np.float64)


def embed_all(
    X: Any,
    *,
    methods: Sequence[str] | None = None,
    center: Any = None,
    random_state: int | None = 0,
    plane_directions: Any = None,
    metric: str = "cosine",
    n_pca: int = 100,
    phate_params: Mapping[str, Any] | None = None,
    chunk_rows: int = 32,
    block_memory: int = _DEFAULT_BLOCK_MEMORY,
) -> dict[str, np.ndarray]:
    """Embed the same samples with several methods, from one streamed pass over ``X``.

    Args:
        X: ``(S, D)`` samples (numpy or zarr array), or a :class:`Gram` from
            :func:`streamed_gram` (which, for ``"random_plane"``, must have been streamed with
            ``vectors=plane_directions``).
        methods: names out of :data:`ALL_METHODS`; None means :func:`available_methods` (all,
            UMAP only if umap-learn is installed). Asking for ``"umap"`` without it raises
            ``ImportError`` with the install command.
        center: ``(D,)`` θ*, the origin of the random plane; None uses the samples' mean.
        random_state: seed of PHATE, t-SNE, UMAP and the Gaussian plane directions.
        plane_directions: ``(2, D)`` directions of the plane (the caller filter-normalises
            them, since that needs the layer structure); None draws two Gaussian directions
            with the norm of θ*.
        metric: the neighbour metric of t-SNE and UMAP (PHATE's is in ``phate_params``).
        n_pca: PCA components given to PHATE, t-SNE and UMAP.
        phate_params: extra :class:`PHATEEmbedding` parameters.
        chunk_rows, block_memory: streaming settings (see :func:`streamed_gram`).

    Returns:
        method name -> ``(S, 2)`` float64 coordinates, in the order of ``methods``.
    """
    names = available_methods() if methods is None else tuple(methods)
    unknown = sorted(set(names) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown embedding methods {unknown}; choose from {list(ALL_METHODS)}")
    if "umap" in names:
        _import_umap()  # fail before the expensive pass, with the install command
    plane = "random_plane" in names
    directions = None
    if plane_directions is not None:
        directions = np.asarray(plane_directions, dtype=np.float64)
    if isinstance(X, Gram):
        gram = X
        if plane:
            if directions is None or gram.vectors is None:
                raise ValueError(
                    "random_plane from a precomputed Gram needs plane_directions, and the "
                    "Gram must be streamed with vectors=plane_directions"
                )
            if gram.vectors.shape != directions.shape or not np.array_equal(
                gram.vectors, directions
            ):
                raise ValueError("the Gram was streamed with other vectors than plane_directions")
    else:
        source = as_source(X)
        if plane and directions is None:
            directions = _gaussian_directions(int(source.shape[1]), random_state)
        gram = streamed_gram(
            source,
            vectors=directions if plane else None,
            chunk_rows=chunk_rows,
            block_memory=block_memory,
        )
    if plane and (directions is None or directions.shape != (2, gram.n_features)):
        raise ValueError(f"plane_directions must have shape (2, {gram.n_features})")

    n_samples = gram.n_samples
    scores = None
    if {"pca", "tsne", "umap"} & set(names):
        k = min(n_pca, n_samples - 1, gram.n_features)
        if k < 2:
            raise ValueError(f"PCA-based embeddings need at least 3 samples, got {n_samples}")
        scores = OutOfCorePCA(k, method="exact", compute_components=False).fit(gram).scores_

    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "pca":
            out[name] = scores[:, :2].copy()
        elif name == "phate":
            params = {"n_pca": n_pca, **dict(phate_params or {})}
            model = PHATEEmbedding(random_state=random_state, **params)
            out[name] = model.fit(gram).embedding_
        elif name == "tsne":
            out[name] = _tsne(scores, metric, random_state)
        elif name == "umap":
            out[name] = _umap(scores, metric, random_state)
        else:
            out[name] = _plane_coordinates(
                gram, directions, center, rescale=plane_directions is None
            )
    return out


# --------------------------------------------------------------------------- scores


def _high_distances(
    X_high: Any, metric: str, precomputed: bool, chunk_rows: int, block_memory: int
) -> np.ndarray:
    """``(S, S)`` distances between the high-dimensional samples, exact (from the Gram)."""
    if precomputed:
        dist = np.asarray(X_high, dtype=np.float64)
        if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
            raise ValueError(f"a precomputed distance matrix must be square, got {dist.shape}")
        return dist
    gram, _ = _gram_of(X_high, chunk_rows, block_memory)
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
    block_memory: int = _DEFAULT_BLOCK_MEMORY,
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
    block_memory: int = _DEFAULT_BLOCK_MEMORY,
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
    block_memory: int = _DEFAULT_BLOCK_MEMORY,
) -> float:
    """DEMaP-like score: Spearman ρ of embedding distances vs kNN-graph geodesic distances.

    The geodesic distance of two samples is the shortest path through the symmetrised graph
    joining every sample to its ``knn`` nearest neighbours (edges weighted by their
    parameter-space distance). Pairs in different connected components are left out.
    """
    dist = _high_distances(X_high, metric, precomputed, chunk_rows, block_memory)
    low = _low(X_low, dist.shape[0])
    n = dist.shape[0]
    if not 1 <= knn < n:
        raise ValueError(f"knn={knn} must be between 1 and n_samples - 1 = {n - 1}")
    masked = dist.copy()
    np.fill_diagonal(masked, np.inf)
    neighbours = np.argpartition(masked, knn - 1, axis=1)[:, :knn]
    rows = np.repeat(np.arange(n), knn)
    cols = neighbours.ravel()
    # A tiny floor keeps zero-distance edges (duplicate samples) in the sparse graph.
    weights = np.maximum(dist[rows, cols], np.finfo(float).tiny)
    graph = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))
    geodesic = shortest_path(graph.maximum(graph.T), method="D", directed=False)
    upper = np.triu_indices(n, k=1)
    geo, emb = geodesic[upper], _pairwise(low)[upper]
    keep = np.isfinite(geo)
    return _spearman(geo[keep], emb[keep])


def score_embeddings(
    X: Any,
    embeddings: Mapping[str, Any],
    *,
    trajectory_ids: Any = None,
    order: Any = None,
    k: int = 10,
    metric: str = "euclidean",
    precomputed: bool = False,
    chunk_rows: int = 32,
    block_memory: int = _DEFAULT_BLOCK_MEMORY,
) -> dict[str, dict[str, float]]:
    """Score every embedding of the same samples against the exact high-dimensional geometry.

    Args:
        X: ``(S, D)`` samples (numpy or zarr array, streamed once), a :class:`Gram` (reused,
            no pass), or with ``precomputed`` an ``(S, S)`` distance matrix.
        embeddings: method -> ``(S, d)`` coordinates (e.g. from :func:`embed_all`).
        trajectory_ids, order: ``(S,)`` trajectory labels and positions along them; with
            ``order=None`` the trajectory score is left out.
        k: neighbours for trustworthiness and for the DEMaP kNN graph.
        metric: parameter-space metric, ``"euclidean"`` (default: the geometry of weight
            space) or ``"cosine"`` (the one PHATE's graph uses).

    Returns:
        method -> {"trustworthiness", "trajectory_preservation" (if ``order``), "demap"}.
    """
    dist = _high_distances(X, metric, precomputed, chunk_rows, block_memory)
    out: dict[str, dict[str, float]] = {}
    for name, low in embeddings.items():
        row = {"trustworthiness": trustworthiness_score(dist, low, k, precomputed=True)}
        if order is not None:
            row["trajectory_preservation"] = trajectory_preservation(
                dist, low, trajectory_ids, order, precomputed=True
            )
        row["demap"] = demap_score(dist, low, knn=k, precomputed=True)
        out[name] = row
    return out
