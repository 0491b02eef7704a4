"""Embeddings (PAPERS B2): streamed Gram and PCA, seeded PHATE, embed_all, scores and plots."""

from __future__ import annotations

import ast
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy.spatial.distance import pdist, squareform
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError, SkipTestWarning
from sklearn.utils import estimator_checks

import lossatlas.analysis._outofcore as outofcore_module
import lossatlas.analysis.embedding as emb_module
from lossatlas.analysis import (
    Gram,
    OutOfCorePCA,
    PHATEEmbedding,
    demap_score,
    embed_all,
    score_embeddings,
    streamed_gram,
    trajectory_preservation,
    trustworthiness_score,
)
from lossatlas.analysis.embedding import (
    ALL_METHODS,
    available_methods,
    connecting_knn,
    continuity_score,
    knn_purity,
)
from lossatlas.plots import figure_to_png, plotly_to_html
from lossatlas.plots.embedding import (
    plot_embedding_grid,
    plot_embedding_interactive,
    plot_embedding_scores,
)

# --------------------------------------------------------------------------- data


def jump_samples(
    seeds: int = 3, sizes: tuple[float, ...] = (0.5, 1.0), epochs: int = 12, dim: int = 120
) -> dict[str, np.ndarray]:
    """A miniature jump-and-retrain: from θ* + size·d_seed, decay back to θ* with noise.

    Trajectories of one seed share a ray and all of them end near θ*, so the kNN graph is
    connected (PHATE warns on disconnected graphs, and warnings are errors here).
    """
    rng = np.random.default_rng(0)
    theta = rng.normal(size=dim) + 3.0  # far from the origin, like real weights
    rows, ids, order, size_of, seed_of = [], [], [], [], []
    for seed in range(seeds):
        direction = rng.normal(size=dim)
        direction *= np.linalg.norm(theta) / np.linalg.norm(direction)
        for size in sizes:
            t = np.arange(epochs)
            traj = theta + np.outer(size * np.exp(-t / 3.0), direction)
            rows.append(traj + 0.01 * rng.normal(size=traj.shape))
            ids += [len(ids) // epochs] * epochs
            order += list(t)
            size_of += [size] * epochs
            seed_of += [seed] * epochs
    X = np.vstack(rows)
    return {
        "X": X,
        "ids": np.array(ids),
        "order": np.array(order),
        "theta": theta,
        "size": np.array(size_of),
        "seed": np.array(seed_of),
        "loss": np.sum((X - theta) ** 2, axis=1),
    }


@pytest.fixture(scope="module")
def jumps() -> dict[str, np.ndarray]:
    return jump_samples()


@pytest.fixture(scope="module")
def embedded(jumps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return embed_all(jumps["X"], methods=["phate", "pca", "tsne", "random_plane"])


def as_zarr(X: np.ndarray, chunks: tuple[int, int], dtype: str = "float64") -> zarr.Array:
    array = zarr.create_array(store={}, shape=X.shape, dtype=dtype, chunks=chunks)
    array[...] = X.astype(dtype)
    return array


# --------------------------------------------------------------------------- the Gram pass


@pytest.mark.parametrize(
    ("chunks", "block_memory"),
    [(None, 2**29), ((4, 500), 2**29), ((5, 2000), 2**29), ((5, 2000), 1), ((3, 700), 20_000)],
)
def test_gram_distances_equal_pdist(chunks: tuple[int, int] | None, block_memory: int) -> None:
    # block_memory=1 holds one storage chunk per panel: the many-panel path must agree too.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(23, 2000)) + 5.0
    source = X if chunks is None else as_zarr(X, chunks)
    vectors = rng.normal(size=(2, 2000))
    gram = streamed_gram(source, vectors=vectors, chunk_rows=4, block_memory=block_memory)
    for metric in ("euclidean", "sqeuclidean", "cosine"):
        expected = squareform(pdist(X, metric))
        np.testing.assert_allclose(gram.distances(metric), expected, rtol=1e-9, atol=1e-12)
    centred = X - X.mean(axis=0)
    np.testing.assert_allclose(
        gram.cosine(center=True), squareform(pdist(centred, "cosine")), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(gram.raw(), X @ X.T, rtol=1e-12)
    np.testing.assert_allclose(gram.centred(), centred @ centred.T, atol=1e-9)
    np.testing.assert_allclose(gram.mean, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(gram.projections, X @ vectors.T, rtol=1e-10)
    assert (gram.n_samples, gram.n_features) == (23, 2000)


def test_gram_keeps_small_distances_of_far_float32_points() -> None:
    # Weights near θ*: large norms, tiny differences. The shifted float64 Gram must not cancel.
    rng = np.random.default_rng(2)
    X = (rng.normal(size=3000) * 50.0 + rng.normal(size=(12, 3000)) * 1e-3).astype(np.float32)
    exact = squareform(pdist(X.astype(np.float64)))
    got = streamed_gram(as_zarr(X, (4, 3000), "float32")).distances("euclidean")
    np.testing.assert_allclose(got, exact, rtol=1e-6)
    # 1 - cos is ~1e-7 here; the reference halves |x̂ᵢ - x̂ⱼ|², which float64 gets right.
    unit = X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    cos_exact = squareform(pdist(unit, "sqeuclidean")) / 2
    np.testing.assert_allclose(streamed_gram(X).distances("cosine"), cos_exact, rtol=1e-6)


def test_gram_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        streamed_gram(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        streamed_gram(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="vectors"):
        streamed_gram(np.ones((3, 4)), vectors=np.ones((2, 5)))
    with pytest.raises(ValueError, match="cannot be derived"):
        streamed_gram(np.ones((3, 4))).distances("manhattan")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PCA


def low_rank(n: int = 40, dim: int = 300, rank: int = 6, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.5, rank)
    return (rng.normal(size=(n, rank)) * scales) @ rng.normal(size=(rank, dim)) + 7.0


def assert_same_up_to_sign(a: np.ndarray, b: np.ndarray, **tol: float) -> None:
    signs = np.sign(np.sum(a * b, axis=0))
    np.testing.assert_allclose(a * signs, b, **tol)


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_pca_matches_sklearn(method: str) -> None:
    X = low_rank() + 0.01 * np.random.default_rng(4).normal(size=(40, 300))
    ours = OutOfCorePCA(4, method=method).fit(X)
    ref = PCA(4, svd_solver="full").fit(X)
    assert_same_up_to_sign(ours.scores_, ref.transform(X), rtol=1e-7, atol=1e-8)
    assert_same_up_to_sign(ours.components_.T, ref.components_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-9
    )
    np.testing.assert_allclose(ours.singular_values_, ref.singular_values_, rtol=1e-9)
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.transform(X), ours.scores_, atol=1e-8)
    assert isinstance(ours.gram_, Gram)


def test_pca_from_zarr_matches_in_memory() -> None:
    X = low_rank().astype(np.float32)
    z = as_zarr(X, (8, 64), "float32")
    mem = OutOfCorePCA(5, chunk_rows=8).fit(X)
    disk = OutOfCorePCA(5, chunk_rows=8, block_memory=10_000).fit(z)
    np.testing.assert_allclose(disk.scores_, mem.scores_, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(disk.components_, mem.components_, atol=1e-5)
    np.testing.assert_allclose(disk.transform(z), mem.transform(X), rtol=1e-4, atol=1e-3)
    ref = PCA(5, svd_solver="full").fit(X.astype(np.float64))
    assert_same_up_to_sign(disk.scores_, ref.transform(X.astype(np.float64)), atol=1e-3)


def test_pca_without_components_and_from_gram() -> None:
    X = low_rank()
    full = OutOfCorePCA(3).fit(X)
    lean = OutOfCorePCA(3, compute_components=False).fit(X)
    from_gram = OutOfCorePCA(3).fit(streamed_gram(X))
    np.testing.assert_allclose(lean.scores_, full.scores_)
    np.testing.assert_allclose(from_gram.scores_, full.scores_)
    assert lean.components_ is None and from_gram.components_ is None
    with pytest.raises(ValueError, match="without components"):
        lean.transform(X)


def test_pca_uncentred_is_truncated_svd() -> None:
    X = low_rank()
    ours = OutOfCorePCA(3, center=False).fit(X)
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    assert_same_up_to_sign(ours.scores_, u[:, :3] * s[:3], rtol=1e-8)
    np.testing.assert_allclose(ours.singular_values_, s[:3], rtol=1e-10)
    np.testing.assert_allclose(ours.mean_, 0.0)
    np.testing.assert_allclose(ours.transform(X), ours.scores_, atol=1e-8)


def test_pca_incremental_on_low_rank_data() -> None:
    # IncrementalPCA keeps k components between batches: exact when the rank is at most k.
    X = low_rank(rank=4)
    ours = OutOfCorePCA(4, method="incremental", chunk_rows=8).fit(as_zarr(X, (8, 300)))
    ref = PCA(4, svd_solver="full").fit(X)
    assert_same_up_to_sign(ours.scores_, ref.transform(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-6
    )
    with pytest.raises(ValueError, match="always centres"):
        OutOfCorePCA(2, method="incremental", center=False).fit(X)


def test_pca_parameter_errors() -> None:
    X = low_rank(n=10, dim=20)
    with pytest.raises(ValueError, match="n_components=11"):
        OutOfCorePCA(11).fit(X)
    with pytest.raises(ValueError, match="method"):
        OutOfCorePCA(2, method="svd").fit(X)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 is required"):
        OutOfCorePCA(1).fit(as_zarr(X[:1], (1, 20)))


# --------------------------------------------------------------------------- sklearn contract


def test_estimators_follow_the_sklearn_contract(jumps: dict[str, np.ndarray]) -> None:
    for estimator in (OutOfCorePCA(3), PHATEEmbedding()):
        with pytest.raises(NotFittedError):
            estimator.transform(jumps["X"]) if isinstance(
                estimator, OutOfCorePCA
            ) else estimator.transform()
        params = estimator.get_params()
        twin = clone(estimator).set_params(**params)
        assert twin.get_params() == params
        assert twin.set_params(random_state=7) is twin and twin.random_state == 7
    pca = OutOfCorePCA(3)
    assert pca.fit(jumps["X"]) is pca
    assert list(pca.get_feature_names_out()) == ["outofcorepca0", "outofcorepca1", "outofcorepca2"]
    phate_model = PHATEEmbedding()
    assert phate_model.fit(jumps["X"]) is phate_model
    assert phate_model.n_features_in_ == jumps["X"].shape[1]
    with pytest.raises(ValueError, match="new samples"):
        phate_model.transform(jumps["X"])


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_out_of_core_pca_passes_check_estimator(method: str) -> None:
    with warnings.catch_warnings():
        # scikit-learn skips its Array-API check (SCIPY_ARRAY_API unset) with a warning.
        warnings.simplefilter("ignore", SkipTestWarning)
        estimator_checks.check_estimator(OutOfCorePCA(1, method=method))


# PHATE places no new samples, so the checks that call transform(X_new) do not apply.
PHATE_CHECKS = [
    "check_parameters_default_constructible",
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_estimators_unfitted",
    "check_mixin_order",
    "check_dont_overwrite_parameters",
    "check_estimators_overwrite_params",
    "check_fit_check_is_fitted",
    "check_n_features_in",
    "check_fit2d_1sample",
    "check_fit1d",
    "check_complex_data",
    "check_estimator_sparse_array",
    "check_estimators_empty_data_messages",
    "check_requires_y_none",
]


@pytest.mark.parametrize("check", PHATE_CHECKS)
def test_phate_passes_applicable_sklearn_checks(check: str) -> None:
    with warnings.catch_warnings():
        # The checks fit on separated blobs; PHATE rightly warns their kNN graph is disconnected.
        warnings.filterwarnings("ignore", message="Graph is disconnected", category=RuntimeWarning)
        getattr(estimator_checks, check)("PHATEEmbedding", PHATEEmbedding(knn=3))


# --------------------------------------------------------------------------- PHATE


def test_phate_is_seeded_and_reproducible(jumps: dict[str, np.ndarray]) -> None:
    X = jumps["X"]
    first = PHATEEmbedding(random_state=3).fit(X)
    again = PHATEEmbedding(random_state=3).fit(X)
    other = PHATEEmbedding(random_state=4).fit(X)
    np.testing.assert_array_equal(first.embedding_, again.embedding_)
    assert not np.allclose(first.embedding_, other.embedding_)
    n = X.shape[0]
    assert first.embedding_.shape == (n, 2)
    assert first.diff_potential_.shape == (n, n)
    assert np.isfinite(first.diff_potential_).all()
    assert first.t_ >= 1
    np.testing.assert_array_equal(first.fit_transform(X), first.embedding_)
    np.testing.assert_array_equal(first.transform(), first.embedding_)


def test_phate_inputs_agree(jumps: dict[str, np.ndarray]) -> None:
    X = jumps["X"]
    base = PHATEEmbedding().fit(X).embedding_
    np.testing.assert_array_equal(PHATEEmbedding().fit(streamed_gram(X)).embedding_, base)
    disk = PHATEEmbedding().fit(as_zarr(X, (8, 40))).embedding_
    np.testing.assert_allclose(disk, base, atol=1e-6 * np.abs(base).max())
    # Precomputed (centred) PCA scores: re-centring and re-projecting them changes nothing.
    scores = OutOfCorePCA(X.shape[0] - 1).fit(X).scores_  # all of them: the rank
    np.testing.assert_allclose(
        PHATEEmbedding().fit(scores).embedding_, base, atol=1e-6 * np.abs(base).max()
    )


def test_phate_gram_reduction_and_errors(jumps: dict[str, np.ndarray]) -> None:
    model = PHATEEmbedding(reduction="gram", t=10).fit(jumps["X"])
    assert model.t_ == 10 and model.embedding_.shape == (jumps["X"].shape[0], 2)
    with pytest.raises(ValueError, match="knn_dist"):
        PHATEEmbedding(reduction="gram", knn_dist="manhattan").fit(jumps["X"])
    with pytest.raises(ValueError, match="reduction"):
        PHATEEmbedding(reduction="none").fit(jumps["X"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="more samples"):
        PHATEEmbedding(knn=5).fit(jumps["X"][:5])
    with pytest.raises(ValueError, match="t must be"):
        PHATEEmbedding(t=0).fit(jumps["X"])


# --------------------------------------------------------------------------- embed_all


def test_embed_all_returns_every_available_method(
    jumps: dict[str, np.ndarray], embedded: dict[str, np.ndarray]
) -> None:
    assert list(embedded) == ["phate", "pca", "tsne", "random_plane"]
    for coords in embedded.values():
        assert coords.shape == (jumps["X"].shape[0], 2)
        assert np.isfinite(coords).all()
    # PCA is the first two scores of the same samples.
    ref = PCA(2, svd_solver="full").fit_transform(jumps["X"])
    assert_same_up_to_sign(embedded["pca"], ref, rtol=1e-7, atol=1e-8)
    # PHATE inside embed_all is the same seeded PHATE.
    np.testing.assert_array_equal(embedded["phate"], PHATEEmbedding().fit(jumps["X"]).embedding_)
    assert set(available_methods()) <= set(ALL_METHODS)
    assert ("umap" in available_methods()) == (importlib.util.find_spec("umap") is not None)


def test_random_plane_recovers_plane_coordinates() -> None:
    rng = np.random.default_rng(5)
    dim = 400
    theta = rng.normal(size=dim) + 1.0
    directions = rng.normal(size=(2, dim))
    directions[1] += 0.3 * directions[0]  # not orthogonal: least squares must still invert
    coords = rng.uniform(-1, 1, size=(30, 2))
    X = theta + coords @ directions
    out = embed_all(X, methods=["random_plane"], center=theta, plane_directions=directions)
    np.testing.assert_allclose(out["random_plane"], coords, atol=1e-10)
    gram = streamed_gram(X, vectors=directions)
    again = embed_all(gram, methods=["random_plane"], center=theta, plane_directions=directions)
    np.testing.assert_allclose(again["random_plane"], coords, atol=1e-10)
    with pytest.raises(ValueError, match="other vectors"):
        embed_all(gram, methods=["random_plane"], plane_directions=directions + 1.0)
    # Without directions: seeded Gaussian ones, the same for the same seed.
    a = embed_all(X, methods=["random_plane"], random_state=1)["random_plane"]
    b = embed_all(X, methods=["random_plane"], random_state=1)["random_plane"]
    np.testing.assert_array_equal(a, b)


def test_embed_all_rejects_unknown_methods(jumps: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="unknown embedding methods"):
        embed_all(jumps["X"], methods=["pca", "isomap"])


def test_umap_missing_gives_a_clear_error(
    jumps: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def no_umap(name: str, *args: object) -> object:
        return None if name == "umap" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_umap)
    assert "umap" not in available_methods()
    with pytest.raises(ImportError, match=r"pip install 'lossatlas\[umap\]'"):
        embed_all(jumps["X"], methods=["pca", "umap"])


def test_umap_embedding_when_installed(jumps: dict[str, np.ndarray]) -> None:
    if importlib.util.find_spec("umap") is None:
        pytest.skip("umap-learn is not installed (optional extra lossatlas[umap])")
    a = embed_all(jumps["X"], methods=["umap"])["umap"]
    b = embed_all(jumps["X"], methods=["umap"])["umap"]
    assert a.shape == (jumps["X"].shape[0], 2)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- scores


def test_trustworthiness_of_pca_on_planar_data_is_one() -> None:
    rng = np.random.default_rng(6)
    coords = rng.uniform(-1, 1, size=(60, 2))
    X = 4.0 + coords @ rng.normal(size=(2, 250))
    pca = OutOfCorePCA(2).fit_transform(X)
    assert trustworthiness_score(X, pca, 10) == pytest.approx(1.0, abs=1e-12)
    noise = rng.normal(size=(60, 2))
    assert trustworthiness_score(X, noise, 10) < 0.8
    dist = squareform(pdist(X))
    assert trustworthiness_score(dist, pca, 10, precomputed=True) == pytest.approx(1.0)
    assert trustworthiness_score(streamed_gram(X), pca, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="below n_samples / 2"):
        trustworthiness_score(X, pca, 30)


def spiral_trajectories() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three spiral arcs and a line in 80-D; also their faithful 2-D drawing."""
    rng = np.random.default_rng(7)
    basis = np.linalg.qr(rng.normal(size=(80, 2)))[0].T  # orthonormal plane
    flat, ids, order = [], [], []
    for j in range(4):
        t = np.linspace(0.0, 1.0, 25)
        if j < 3:
            angle = 3.0 * t + 2.1 * j
            xy = np.c_[(1 + 2 * t) * np.cos(angle), (1 + 2 * t) * np.sin(angle)]
        else:
            xy = np.c_[4 * t, -4 * t]
        flat.append(xy)
        ids += [j] * t.size
        order += list(range(t.size))
    low = np.vstack(flat)
    X = 10.0 + low @ basis + 1e-4 * rng.normal(size=(low.shape[0], 80))
    return X, low, np.array(ids), np.array(order)


def test_trajectory_preservation_prefers_a_faithful_embedding() -> None:
    X, good, ids, order = spiral_trajectories()
    rng = np.random.default_rng(8)
    bad = rng.normal(size=good.shape)
    for reference in ("arc", "ambient"):
        kw = {"reference": reference}
        good_rho = trajectory_preservation(X, good, ids, order, **kw)  # type: ignore[arg-type]
        bad_rho = trajectory_preservation(X, bad, ids, order, **kw)  # type: ignore[arg-type]
        assert good_rho > 0.95
        assert abs(bad_rho) < 0.3
    # Shuffling the order along each trajectory breaks the arc score of the same embedding.
    shuffled = order.copy()
    for j in np.unique(ids):
        shuffled[ids == j] = rng.permutation(order[ids == j])
    assert trajectory_preservation(X, good, ids, shuffled) < 0.5
    # Geodesics follow the arcs while the drawing's straight lines cut across them, so the
    # faithful drawing is not a perfect DEMaP; it must still beat noise clearly.
    assert demap_score(X, good, knn=5) > 0.6 > 0.2 > demap_score(X, bad, knn=5)
    with pytest.raises(ValueError, match="repeated order"):
        trajectory_preservation(X, good, ids, np.zeros_like(order))


SCORES = {"trustworthiness", "continuity", "demap"}


def test_score_embeddings(jumps: dict[str, np.ndarray], embedded: dict[str, np.ndarray]) -> None:
    X = jumps["X"]
    rng = np.random.default_rng(9)
    candidates = {**embedded, "noise": rng.normal(size=(X.shape[0], 2))}
    labels = {"trajectory": jumps["ids"], "direction": jumps["seed"]}
    scores = score_embeddings(X, candidates, labels=labels, k=8)
    assert list(scores) == list(candidates)
    names = SCORES | {"purity_trajectory", "purity_direction"}
    for row in scores.values():
        assert set(row) == names
    for name in embedded:
        for metric in names:
            assert scores[name][metric] > scores["noise"][metric], (name, metric)
    # A Gram or a precomputed matrix gives the same numbers without another pass.
    again = score_embeddings(streamed_gram(X), candidates, labels=labels, k=8)
    for name, row in scores.items():
        assert again[name] == pytest.approx(row)
    assert set(score_embeddings(X, {"pca": embedded["pca"]}, k=8)["pca"]) == SCORES


def test_continuity_is_trustworthiness_with_the_roles_swapped() -> None:
    """Collapsing a 3-D blob onto a line keeps every neighbour it shows true (trustworthy) but
    tears true neighbours apart (discontinuous); a 2-D plane in 3-D is perfect on both."""
    rng = np.random.default_rng(3)
    plane = np.c_[rng.normal(size=(120, 2)), np.zeros(120)]
    assert continuity_score(plane, plane[:, :2], 8) == pytest.approx(1.0)
    assert trustworthiness_score(plane, plane[:, :2], 8) == pytest.approx(1.0)
    blob = rng.normal(size=(120, 3))
    folded = np.c_[np.abs(blob[:, 0]), np.zeros(120)]  # both sides of x = 0 land together
    assert continuity_score(blob, folded, 8) < 0.9
    # Swapping roles by hand: trustworthiness of the blob seen from the embedding.
    assert continuity_score(blob, blob[:, :2], 8) == pytest.approx(
        trustworthiness_score(blob[:, :2], blob, 8)
    )


def test_knn_purity_separates_labelled_clusters_from_a_random_layout() -> None:
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), 30)
    clusters = np.c_[labels * 10.0, np.zeros(120)] + rng.normal(size=(120, 2))
    assert knn_purity(clusters, labels, 5) == pytest.approx(1.0)
    shuffled = knn_purity(clusters, rng.permutation(labels), 5)
    assert abs(shuffled - 0.25) < 0.1  # the collision rate of 4 equal classes
    with pytest.raises(ValueError, match="labels must have shape"):
        knn_purity(clusters, labels[:-1], 5)


def test_demap_grows_its_graph_until_connected() -> None:
    """Two far clusters: a 3-NN graph is in two pieces; DEMaP uses the smallest k that joins
    them, so the between-cluster pairs count: a layout that draws the clusters on top of each
    other scores far worse than a faithful one."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(20, 2))
    X = np.vstack([a, a + np.array([50.0, 0.0])])
    dist = np.linalg.norm(X[:, None] - X[None], axis=-1)
    k = connecting_knn(dist, 3)
    assert k > 3
    assert connecting_knn(dist, k) == k
    assert demap_score(X, X, knn=3) > 0.95
    assert demap_score(X, np.vstack([a, a]), knn=3) < 0.5


# --------------------------------------------------------------------------- plots


def test_plots_draw(jumps: dict[str, np.ndarray], embedded: dict[str, np.ndarray]) -> None:
    for fig in (
        plot_embedding_grid(
            embedded, jumps["loss"], log=True, order=jumps["order"], trajectory_ids=jumps["ids"]
        ),
        plot_embedding_grid(embedded, jumps["size"], label="jump size", categorical=True),
        plot_embedding_grid(embedded, jumps["seed"], label="seed", categorical=True, ncols=2),
        plot_embedding_scores(
            {"phate": {"trustworthiness": 0.9, "demap": np.nan}, "pca": {"demap": -0.1}}
        ),
    ):
        assert figure_to_png(fig).startswith(b"\x89PNG")
    hover = {
        "jump size": jumps["size"],
        "seed": jumps["seed"],
        "epoch": jumps["order"],
        "test loss": jumps["loss"],
    }
    continuous = plot_embedding_interactive(
        embedded["phate"],
        hover=hover,
        method="phate",
        trajectory_ids=jumps["ids"],
        order=jumps["order"],
    )
    html = plotly_to_html(continuous).decode()
    assert "PHATE" in html and "jump size" in html and "customdata" in html
    by_seed = plot_embedding_interactive(embedded["pca"], hover=hover, color="seed")
    assert sum(trace.mode == "markers" for trace in by_seed.data) == 3


# --------------------------------------------------------------------------- layering


def test_embedding_modules_never_import_torch() -> None:
    files = [*Path(emb_module.__file__).parent.glob("*.py"), Path(outofcore_module.__file__)]
    for file in files:
        tree = ast.parse(file.read_text())
        imported = {
            name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for name in (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
        }
        assert not any(name.split(".")[0] == "torch" for name in imported)
        assert "lossatlas.seeding" not in imported  # it imports torch


def test_phate_warnings_are_silenced_even_when_phate_resets_the_level() -> None:
    import logging

    import tasklogger

    from lossatlas.analysis.embedding.phate import _quiet_graphtools

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    def like_phate() -> int:
        # PHATE sets the level from ``verbose`` inside fit_transform, then SGD-MDS warns.
        tasklogger.set_level(1, logger="graphtools")
        tasklogger.log_warning("SGD-MDS may not have converged", logger="graphtools")
        tasklogger.log_error("a real error", logger="graphtools")
        return 7

    # A handler of our own sees exactly what the logger lets through, whatever streams
    # earlier tests left its own handlers writing to.
    logger = tasklogger.get_tasklogger("graphtools").logger
    collect = Collect()
    logger.addHandler(collect)
    try:
        assert _quiet_graphtools(like_phate) == 7
    finally:
        logger.removeHandler(collect)
    assert not any("may not have converged" in m for m in collect.messages)
    assert any("a real error" in m for m in collect.messages)


def test_phate_reports_its_graph_components_and_the_knn_that_connects_it() -> None:
    """Two far clusters: PHATE's knn=5 graph is in two pieces; the smallest knn that connects
    it gives a refit with one component, and a connected graph keeps its knn."""
    import warnings

    rng = np.random.default_rng(6)
    a = rng.normal(size=(25, 10))
    X = np.vstack([a, a + 60.0 * np.eye(10)[0]])
    phate = PHATEEmbedding(knn=5, knn_dist="euclidean", mds_dist="euclidean", n_pca=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*disconnected.*")
        phate.fit(X)
        assert phate.graph_components_ == 2
        knn = phate.connecting_knn(X)
    assert knn > 5
    joined = PHATEEmbedding(knn=knn, knn_dist="euclidean", mds_dist="euclidean", n_pca=None)
    assert joined.fit(X).graph_components_ == 1
    assert joined.connecting_knn(X) == knn
