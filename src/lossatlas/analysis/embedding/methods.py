"""Every embedding method of the comparison from one Gram pass: PHATE, PCA, t-SNE, UMAP, plane."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lossatlas.analysis._outofcore import (
    DEFAULT_BLOCK_MEMORY,
    Gram,
    as_source,
    streamed_gram,
)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator: Any, X: Any, **kwargs: Any) -> Any:
        return estimator._validate_data(X, **kwargs)


from lossatlas.analysis.embedding.pca import OutOfCorePCA
from lossatlas.analysis.embedding.phate import PHATEEmbedding

__all__ = ["ALL_METHODS", "available_methods", "embed_all"]


ALL_METHODS = ("phate", "pca", "tsne", "umap", "random_plane")


_UMAP_MISSING = (
    "UMAP needs the optional extra umap-learn: pip install 'lossatlas[umap]' "
    "(or leave 'umap' out of methods)"
)


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
    block_memory: int = DEFAULT_BLOCK_MEMORY,
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
    scores = np.empty((n_samples, 0))  # only PCA, t-SNE and UMAP read the PCA scores
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
            assert directions is not None  # checked above whenever the plane is asked for
            out[name] = _plane_coordinates(
                gram, directions, center, rescale=plane_directions is None
            )
    return out
