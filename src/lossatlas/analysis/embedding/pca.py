"""Out-of-core PCA of ``(S, D)`` samples from their ``S x S`` Gram matrix."""

from __future__ import annotations

import itertools
import numbers
from typing import Any, Literal

import numpy as np
from scipy.linalg import eigh
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.extmath import randomized_svd
from sklearn.utils.validation import check_is_fitted

from lossatlas.analysis._outofcore import (
    DEFAULT_BLOCK_MEMORY,
    Gram,
    _slices,
    as_source,
    is_out_of_core,
    iter_rows,
    read_rows,
    streamed_gram,
)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator: Any, X: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(X, **kwargs)


__all__ = ["OutOfCorePCA"]


def _sign_flip(scores: np.ndarray) -> np.ndarray:
    # Eigenvectors have no sign; fix it so the largest |score| of each component is positive,
    # which makes results independent of the eigensolver.
    idx = np.argmax(np.abs(scores), axis=0)
    signs = np.sign(scores[idx, np.arange(scores.shape[1])])
    signs[signs == 0] = 1.0
    return signs


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
        block_memory: int = DEFAULT_BLOCK_MEMORY,
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
        if is_out_of_core(X):
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
        self.gram_: Gram | None = gram
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
        if is_out_of_core(X):
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
