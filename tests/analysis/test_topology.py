"""Topology of sampled losses (PAPERS B3, B4): graph, filtration, diagrams, summaries, plots."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from lossatlas.analysis import (
    LossTopology,
    compare_networks,
    diagram_distance,
    knn_graph,
    persistence_diagrams,
    persistence_summary,
    sublevel_filtration,
)
from lossatlas.analysis.topology import (
    component_count,
    connected_knn_graph,
    finite_persistence,
    rank_normalised,
    shuffled_h0_persistence,
)
from lossatlas.plots import figure_to_png
from lossatlas.plots.topology import (
    plot_barcode,
    plot_persistence_diagram,
    plot_topology_comparison,
)

INF = math.inf

# ------------------------------------------------------------------ graph


def _edge_set(edges: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in edges}


def test_knn_graph_takes_nearest_not_farthest() -> None:
    # Gaps double along a line, so each point's nearest neighbour is the one to its left
    # (except 0 -> 1), while the farthest is always an end point.
    x = np.array([0.0, 1.0, 3.0, 7.0, 15.0])[:, None]
    edges = knn_graph(x, k=1)
    assert _edge_set(edges) == {(0, 1), (1, 2), (2, 3), (3, 4)}
    # The released script's bug (largest distances first) would give another graph.
    d = cdist(x, x)
    np.fill_diagonal(d, -np.inf)
    farthest = np.argsort(-d, axis=1, kind="stable")[:, :1]
    buggy = {(min(i, int(j)), max(i, int(j))) for i, row in enumerate(farthest) for j in row}
    assert buggy != _edge_set(edges)
    # The same graph from the distance matrix.
    np.testing.assert_array_equal(knn_graph(cdist(x, x), k=1, metric="precomputed"), edges)


def test_knn_graph_on_potential_rows_uses_euclidean_distance_between_rows() -> None:
    rng = np.random.default_rng(1)
    potential = rng.random((30, 12))  # (S, S') as PHATE's landmark potential
    np.testing.assert_array_equal(
        knn_graph(potential, k=4),
        knn_graph(cdist(potential, potential), k=4, metric="precomputed"),
    )


def test_knn_graph_is_symmetric_deduplicated_and_contains_every_knn() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    k = 3
    edges = knn_graph(x, k=k)
    assert edges.dtype == np.int64 and edges.shape[1] == 2
    assert np.all(edges[:, 0] < edges[:, 1])  # one orientation, no self-loops
    assert len(np.unique(edges, axis=0)) == len(edges)  # no duplicates
    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :k]
    expected = {(min(i, int(j)), max(i, int(j))) for i in range(40) for j in nearest[i]}
    assert _edge_set(edges) == expected  # exactly the "or" union of the kNN relations
    degree = np.bincount(edges.ravel(), minlength=40)
    assert degree.min() >= k


def test_knn_graph_breaks_ties_by_lower_index() -> None:
    # 1 and 2 are equally far from 0 and nearer each other: 0 must pick 1, the lower index.
    d = np.array([[0.0, 2.0, 2.0], [2.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    assert _edge_set(knn_graph(d, k=1, metric="precomputed")) == {(0, 1), (1, 2)}


def test_knn_graph_rejects_bad_input() -> None:
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(x, k=5)
    with pytest.raises(ValueError, match="square"):
        knn_graph(np.zeros((5, 3)), k=1, metric="precomputed")
    with pytest.raises(ValueError, match="NaN"):
        knn_graph(np.full((5, 2), np.nan), k=1)


# ------------------------------------------------------------------ filtration and persistence

# A 6-cycle 0-1-2-3-4-5-0. Edge values (max of ends): 2, 2, 3, 3, 4, 4.
# t=1: edge (1,2) merges {2} (born 1) into {0,1}  -> H0 bar [1, 2)
# t=3: edge (3,4) merges {4} (born 0.5)           -> H0 bar [0.5, 3)
# t=4: vertex 5 joins by one edge, the other closes the cycle -> H1 born at 4
CYCLE_VALUES = np.array([0.0, 2.0, 1.0, 3.0, 0.5, 4.0])
CYCLE_EDGES = np.array([[i, (i + 1) % 6] for i in range(6)])
CYCLE_H0 = np.array([[0.0, INF], [0.5, 3.0], [1.0, 2.0]])


def test_cycle_in_the_bare_graph_never_dies() -> None:
    st = sublevel_filtration(CYCLE_EDGES, CYCLE_VALUES, max_dimension=1)
    assert st.filtration([5, 0]) == 4.0 and st.filtration([2]) == 1.0  # edge = max of ends
    dgms = persistence_diagrams(st, (0, 1))
    np.testing.assert_array_equal(dgms[0], CYCLE_H0)
    np.testing.assert_array_equal(dgms[1], [[4.0, INF]])


def test_cycle_is_killed_when_triangles_fill_it() -> None:
    # A hub vertex 6 at loss 6 joined to every cycle vertex: triangles (i, i+1, 6) all enter
    # at 6 in the flag complex, so the cycle born at 4 dies at 6.
    values = np.append(CYCLE_VALUES, 6.0)
    edges = np.vstack([CYCLE_EDGES, [[i, 6] for i in range(6)]])
    dgms = persistence_diagrams(sublevel_filtration(edges, values), (0, 1, 2))
    np.testing.assert_array_equal(dgms[0], CYCLE_H0)
    np.testing.assert_array_equal(dgms[1], [[4.0, 6.0]])
    assert dgms[2].shape == (0, 2)
    # Without triangles the hub adds five more never-dying cycles instead.
    bare = persistence_diagrams(sublevel_filtration(edges, values, max_dimension=1), (1,))
    np.testing.assert_array_equal(bare[1], [[4.0, INF]] + [[6.0, INF]] * 5)


def test_two_components_merge_at_the_connecting_edge() -> None:
    # Path 0-1 (values 0, 1) and path 2-3 (values 0.5, 2), joined by edge (1, 3) at max(1, 2).
    values = np.array([0.0, 1.0, 0.5, 2.0])
    edges = np.array([[0, 1], [2, 3], [1, 3]])
    dgms = persistence_diagrams(sublevel_filtration(edges, values), (0,))
    # The younger component (born 0.5) dies when the edge enters at 2.
    np.testing.assert_array_equal(dgms[0], [[0.0, INF], [0.5, 2.0]])


def test_sublevel_filtration_validates() -> None:
    with pytest.raises(ValueError, match="outside"):
        sublevel_filtration(np.array([[0, 5]]), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        sublevel_filtration(np.array([[0, 1]]), np.array([0.0, np.nan]))


# ------------------------------------------------------------------ estimator and alignment


def _samples(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    losses = np.sin(3 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.random(n)  # distinct values
    return x, losses


def test_permuting_samples_with_losses_keeps_diagrams_and_shifting_changes_them() -> None:
    x, losses = _samples()
    ref = LossTopology(k=6).fit(x, losses)
    perm = np.random.default_rng(3).permutation(len(losses))
    permuted = LossTopology(k=6).fit(x[perm], losses[perm])
    for dim in (0, 1):
        np.testing.assert_allclose(permuted.diagrams_[dim], ref.diagrams_[dim])
    assert permuted.summary_ == pytest.approx(ref.summary_)
    # The released script's off-by-one: every sample got its neighbour's loss.
    shifted = LossTopology(k=6).fit(x, np.roll(losses, 1))
    assert any(
        shifted.diagrams_[d].shape != ref.diagrams_[d].shape
        or not np.allclose(shifted.diagrams_[d], ref.diagrams_[d])
        for d in (0, 1)
    )


def test_fit_validates_alignment_and_finiteness() -> None:
    x, losses = _samples(20)
    with pytest.raises(ValueError, match="19 entries but X has 20 rows"):
        LossTopology(k=3).fit(x, losses[1:])
    bad = losses.copy()
    bad[4] = np.inf
    with pytest.raises(ValueError, match=r"finite; samples \[4\]"):
        LossTopology(k=3).fit(x, bad)
    with pytest.raises(ValueError, match="homology_dims"):
        LossTopology(k=3, max_dimension=1, homology_dims=(0, 2)).fit(x, losses)


def test_sklearn_contract() -> None:
    est = LossTopology(k=5, graph_from="embedding")
    assert est.get_params() == {
        "k": 5,
        "max_dimension": 2,
        "homology_dims": (0, 1),
        "graph_from": "embedding",
        "metric": "euclidean",
        "filtration": "loss",
        "connect": False,
    }
    with pytest.raises(NotFittedError):
        est.diagram(0)
    with pytest.raises(NotFittedError):
        compare_networks({"a": est, "b": clone(est)})
    x, losses = _samples(30)
    assert est.fit(x, losses) is est
    assert est.cap_ == losses.max() and est.n_features_in_ == 4
    assert est.diagram(0)[0, 1] == INF  # the oldest component never dies
    assert est.summary_["h0_n_infinite"] == 1.0  # the kNN graph here is connected
    assert clone(est).get_params() == est.get_params()


def test_distances_option_matches_features() -> None:
    x, losses = _samples(30)
    a = LossTopology(k=5, graph_from="features").fit(x, losses)
    b = LossTopology(k=5, graph_from="distances").fit(cdist(x, x), losses)
    np.testing.assert_array_equal(a.edges_, b.edges_)


# ------------------------------------------------------------------ summaries and distances


def test_summary_of_a_hand_computed_diagram() -> None:
    dgm = np.array([[0.0, 1.0], [0.0, 3.0], [1.0, INF]])  # lifetimes 1, 3, 4 with cap 5
    s = persistence_summary({0: dgm, 1: np.empty((0, 2))}, cap=5.0)
    assert s["h0_total_persistence"] == pytest.approx(8.0)
    assert s["h0_p1_norm"] == pytest.approx(8.0)
    assert s["h0_p2_norm"] == pytest.approx(math.sqrt(26.0))
    assert s["h0_pinf_norm"] == pytest.approx(4.0)
    p = np.array([1.0, 3.0, 4.0]) / 8.0
    assert s["h0_entropy"] == pytest.approx(float(-(p * np.log(p)).sum()))
    assert (s["h0_n_features"], s["h0_n_finite"], s["h0_n_infinite"]) == (3.0, 2.0, 1.0)
    assert s["h1_total_persistence"] == 0.0 and s["h1_entropy"] == 0.0
    # Default cap: the largest finite value (3), so the infinite bar lives 3 - 1 = 2.
    assert persistence_summary({0: dgm})["h0_total_persistence"] == pytest.approx(6.0)


def test_diagram_distances_by_hand() -> None:
    a = np.array([[0.0, 2.0], [1.0, INF]])
    assert diagram_distance(a, a) == 0.0
    assert diagram_distance(a, a, metric="wasserstein") == 0.0
    # (0, 2) vs (3, 4): matching them costs max(3, 2) = 3 (L-inf); sending both to the
    # diagonal costs 2/2 = 1 and 1/2 = 0.5. So bottleneck = 1, W1 = 1.5, W2 = sqrt(1.25).
    x, y = np.array([[0.0, 2.0]]), np.array([[3.0, 4.0]])
    assert diagram_distance(x, y) == pytest.approx(1.0)
    assert diagram_distance(x, y, metric="wasserstein") == pytest.approx(1.5)
    assert diagram_distance(x, y, metric="wasserstein", order=2) == pytest.approx(math.sqrt(1.25))
    # Infinite points: matched by birth; different counts -> inf unless capped.
    assert diagram_distance([[0.0, INF]], [[1.0, INF]]) == pytest.approx(1.0)
    assert diagram_distance([[0.0, INF]], np.empty((0, 2))) == INF
    # cap 4: (0, 4) to the diagonal costs 2.
    assert diagram_distance([[0.0, INF]], np.empty((0, 2)), cap=4.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="metric"):
        diagram_distance(x, y, metric="energy")  # type: ignore[arg-type]


def test_compare_networks() -> None:
    x, losses = _samples(40)
    well = LossTopology(k=5).fit(x, losses)
    poor = LossTopology(k=5).fit(x, 2.0 * losses + 1.0)
    out = compare_networks({"well": well, "poor": poor})
    assert out["names"] == ["well", "poor"] and out["dims"] == [0, 1]
    assert out["cap"] == pytest.approx(max(well.cap_, poor.cap_))
    for metric in ("bottleneck", "wasserstein"):
        for dim in (0, 1):
            m = out[metric][dim]
            assert m.shape == (2, 2) and np.all(np.diag(m) == 0) and m[0, 1] == m[1, 0]
            assert np.isfinite(m[0, 1])
    assert out["bottleneck"][0][0, 1] > 0
    diff = out["summary_differences"]
    key = "h0_total_persistence"
    assert diff["well"]["poor"][key] == pytest.approx(-diff["poor"]["well"][key])
    assert diff["well"]["poor"][key] == pytest.approx(
        out["summaries"]["well"][key] - out["summaries"]["poor"][key]
    )
    # Raw diagrams work too.
    raw = compare_networks({"a": well.diagrams_, "b": well.diagrams_}, cap=None)
    assert raw["bottleneck"][0][0, 1] == 0.0 and raw["cap"] is None
    with pytest.raises(ValueError, match="at least two"):
        compare_networks({"a": well})


# ------------------------------------------------------------------ plots


def _is_png(data: bytes) -> bool:
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_plots_render() -> None:
    x, losses = _samples(40)
    well = LossTopology(k=5).fit(x, losses)
    poor = LossTopology(k=5).fit(x, 2.0 * losses + 1.0)
    assert _is_png(figure_to_png(plot_barcode(well.diagrams_, cap=well.cap_)))
    assert _is_png(figure_to_png(plot_persistence_diagram(well.diagrams_)))
    assert _is_png(figure_to_png(plot_persistence_diagram({0: np.empty((0, 2))})))
    fig = plot_topology_comparison(
        {"well": well.diagrams_, "poor": poor.diagrams_},
        summaries={"well": well.summary_, "poor": poor.summary_},
    )
    assert _is_png(figure_to_png(fig))
    assert _is_png(
        figure_to_png(plot_topology_comparison({"a": well.diagrams_, "b": poor.diagrams_}))
    )


# --------------------------------------------------------------------------- landscape statistic


def _two_clusters(n: int = 30) -> np.ndarray:
    rng = np.random.default_rng(11)
    a = rng.normal(size=(n, 2))
    return np.vstack([a, a + np.array([40.0, 0.0])])


def test_connected_knn_graph_joins_pieces_with_tree_edges_only() -> None:
    x = _two_clusters()
    knn = knn_graph(x, 8)
    assert component_count(knn, len(x)) == 2
    edges, pieces = connected_knn_graph(x, 8)
    assert pieces == 2 and component_count(edges, len(x)) == 1
    # Only tree edges are added: one link between the clusters, the rest were short.
    added = {tuple(e) for e in edges} - {tuple(e) for e in knn}
    across = [e for e in added if (e[0] < 30) != (e[1] < 30)]
    assert len(across) == 1
    same, one = connected_knn_graph(x[:30], 8)
    assert one == 1 and np.array_equal(same, knn_graph(x[:30], 8))


def test_rank_filtration_ignores_the_loss_scale_and_range() -> None:
    x, losses = _samples(40)
    a = LossTopology(k=4, filtration="rank", connect=True).fit(x, losses)
    b = LossTopology(k=4, filtration="rank", connect=True).fit(x, 100.0 * losses**3 + 7.0)
    for dim in (0, 1):
        np.testing.assert_array_equal(a.diagram(dim), b.diagram(dim))
    assert a.cap_ == 1.0 and a.values_.max() == 1.0
    np.testing.assert_array_equal(rank_normalised([3.0, 1.0, 2.0]), [1.0, 1 / 3, 2 / 3])
    assert finite_persistence(np.array([[0.0, 1.0], [0.1, 0.4], [0.2, INF]])) == pytest.approx(1.3)


def test_shuffled_null_sees_a_smooth_landscape_and_not_a_random_one() -> None:
    """On a path graph, a loss that rises along the path has no finite H0 bar (one basin);
    shuffling it across the vertices makes many basins (the null is far above)."""
    n = 60
    edges = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
    smooth = rank_normalised(np.arange(n, dtype=float))
    st = sublevel_filtration(edges, smooth, max_dimension=1)
    assert finite_persistence(persistence_diagrams(st, (0,))[0]) == 0.0
    null = shuffled_h0_persistence(edges, smooth, np.random.default_rng(0), 50)
    assert null.shape == (50,) and null.min() > 1.0
    again = shuffled_h0_persistence(edges, smooth, np.random.default_rng(0), 50)
    np.testing.assert_array_equal(null, again)  # seeded
