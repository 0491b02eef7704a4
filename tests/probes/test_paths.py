"""Tunnels and m-connectors: projections, connector geometry, paths, batching, determinism."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import lossatlas
from lossatlas.config import DataConfig, ModelConfig
from lossatlas.data.batches import DEFAULT_ADAPTER, Batch
from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png
from lossatlas.plots.connectors import (
    plot_connector_losses,
    plot_deviation_cosines,
    plot_disagreement,
    plot_loss_vs_optima,
    plot_tunnel_path,
)
from lossatlas.probes._simplex import (
    face_sets,
    log_volume,
    orthonormal_span,
    polyline,
    sample_simplices,
)
from lossatlas.probes.paths import (
    Connector,
    ConnectorOptions,
    Tunnel,
    m_connector,
    projection_onto_complement,
    tunnel,
)
from lossatlas.probes.paths._fit import blocks as _blocks
from lossatlas.probes.paths._fit import optimise_points as _optimise_points
from lossatlas.seeding import make_generator
from tests.conftest import blobs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Small enough for a tiny run; batch 32 gives a few steps per epoch on 128 samples.
FAST = ConnectorOptions(points=5, epochs=6, batch_size=32, path_resolution=4, dirichlet_samples=24)


def small_mlp(hidden: int = 8, dtype: torch.dtype = torch.float32) -> nn.Module:
    return nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, 4)).to(dtype)


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    """Three independently trained tiny MLPs on 4-class blobs (their line has a barrier)."""
    torch.manual_seed(0)
    x, y = blobs(n=128, inputs=5, classes=4, seed=0)
    model = small_mlp()
    pop = lossatlas.train_population(model, (x, y), members=3, epochs=20, lr=0.1, batch_size=32)
    return {"model": model, "data": (x, y), "optima": pop.params}


@pytest.fixture(scope="module")
def tiny_tunnel(trained: dict[str, Any]) -> Tunnel:
    o = trained["optima"]
    return tunnel(trained["model"], trained["data"], o[0], o[1], options=FAST)


def float64_setup(points: int = 3) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], Any]:
    """A float64 tiny model, data and ``points`` random (affinely independent) optima."""
    model = small_mlp(dtype=torch.float64)
    data = blobs(n=64, inputs=5, classes=4, seed=1, dtype=torch.float64)
    dim = ParamSpace(model).dim
    optima = torch.randn(points, dim, generator=make_generator(3, "optima"), dtype=torch.float64)
    return model, data, optima


# --------------------------------------------------------------------------- projection


def test_projection_removes_the_span_and_is_idempotent() -> None:
    g = make_generator(0, "test")
    basis = orthonormal_span(torch.randn(4, 30, generator=g, dtype=torch.float64))
    assert basis.shape == (30, 3)
    torch.testing.assert_close(basis.T @ basis, torch.eye(3, dtype=torch.float64))
    project = projection_onto_complement(basis)
    grads = torch.randn(6, 30, generator=g, dtype=torch.float64)
    out = project(grads)
    assert (out @ basis).abs().max() < 1e-13
    torch.testing.assert_close(project(out), out, rtol=0, atol=1e-14)
    # What is left of g is exactly the part orthogonal to the span.
    torch.testing.assert_close(out + (grads @ basis) @ basis.T, grads)
    with pytest.raises(ValueError, match="orthonormal"):
        projection_onto_complement(2 * basis)


def test_orthonormal_span_rejects_dependent_optima() -> None:
    a = torch.randn(10, generator=make_generator(0, "a"), dtype=torch.float64)
    with pytest.raises(ValueError, match="affinely dependent"):
        orthonormal_span(torch.stack([a, 2 * a, 3 * a]))  # collinear


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 1e-2)])
def test_tunnel_points_move_orthogonally_to_u(optimizer: str, lr: float) -> None:
    model, data, optima = float64_setup(2)
    opts = FAST.model_copy(update={"optimizer": optimizer, "lr": lr, "epochs": 3})
    tn = tunnel(model, data, optima[0], optima[1], options=opts)
    u = (optima[1] - optima[0]) / (optima[1] - optima[0]).norm()
    assert tn.deviations.norm(dim=1).min() > 1e-2  # the points did move
    assert (tn.deviations @ u).abs().max() < 1e-12 * tn.deviations.norm(dim=1).max()


@pytest.mark.parametrize("shape", ["cone", "subdivision"])
def test_connector_points_move_orthogonally_to_the_span(shape: str) -> None:
    model, data, optima = float64_setup(3)
    opts = FAST.model_copy(update={"shape": shape, "epochs": 3})
    conn = m_connector(model, data, optima, options=opts)
    moved = conn.points - conn.start_points
    assert moved.norm(dim=1).min() > 1e-2
    assert (moved @ conn.span_basis).abs().max() < 1e-12 * moved.norm(dim=1).max()
    # The span basis spans exactly the differences of the optima.
    diffs = (optima[1:] - optima[0]).T
    torch.testing.assert_close(conn.span_basis @ (conn.span_basis.T @ diffs), diffs)


# --------------------------------------------------------------------------- connector geometry


@pytest.mark.parametrize("shape", ["cone", "star", "subdivision"])
def test_connector_contains_the_optima_and_samples_lie_in_it(shape: str) -> None:
    model, data, optima = float64_setup(4)  # m = 3
    opts = FAST.model_copy(update={"shape": shape, "epochs": 1, "dirichlet_samples": 40})
    conn = m_connector(model, data, optima, options=opts)
    m, n_vertices = conn.m, conn.vertices.shape[0]
    assert m == 3 and n_vertices == m + 1 + len(conn.faces)
    # One-hot weights at the optima reproduce them bit for bit.
    one_hot = torch.eye(n_vertices, dtype=torch.float64)[: m + 1]
    assert torch.equal(conn.points_at(one_hot), optima)
    w = conn.samples_weights
    assert w.shape == (40, n_vertices) and bool((w >= 0).all())
    torch.testing.assert_close(w.sum(dim=1), torch.ones(40, dtype=torch.float64))
    # Each sample's weight lives on its own simplex, whose first vertex is the centroid.
    support = torch.zeros_like(w, dtype=torch.bool).scatter_(1, conn.samples_simplices, True)
    assert bool((w[~support] == 0).all())
    assert bool((conn.samples_simplices[:, 0] == m + 1).all())
    torch.testing.assert_close(conn.sample_points(), w @ conn.vertices)
    torch.testing.assert_close(conn.start_points[0], optima.mean(dim=0))
    for split in ("train",):
        assert conn.loss_samples[split].shape == (40,)
        assert conn.loss_optima[split].shape == (m + 1,)
        assert conn.loss_centroid[split].dim() == 0


def test_simplex_layouts() -> None:
    m, gen = 2, make_generator(0, "layout")
    cone = sample_simplices(m, "cone", 50, gen)
    assert cone.shape == (50, 3)
    assert all(sorted(r[1:]) == r[1:] and len(set(r[1:]) & {0, 1, 2}) == 2 for r in cone.tolist())
    star = sample_simplices(m, "star", 50, gen)
    assert star.shape == (50, 2) and set(star[:, 1].tolist()) == {0, 1, 2}
    sets = face_sets(m, "subdivision")
    assert sets == [(0, 1, 2), (0, 1), (0, 2), (1, 2)]
    sub = sample_simplices(m, "subdivision", 200, gen)
    # Every one of the 3! orderings appears, and each simplex holds exactly one optimum.
    assert len({tuple(r) for r in sub.tolist()}) == math.factorial(m + 1)
    assert bool(((sub <= m).sum(dim=1) == 1).all())


def test_log_volume_matches_direct_formulas() -> None:
    verts = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0, 0, 2.0]])
    verts = verts.double()
    gram = verts @ verts.T
    simplices = torch.tensor([[0, 1, 2], [0, 1, 2], [0, 1, 3]])
    torch.testing.assert_close(
        log_volume(gram, simplices), torch.tensor([6.0, 6.0, 3.0]).double().log()
    )
    torch.testing.assert_close(
        log_volume(gram, torch.tensor([[1, 2]])), torch.tensor([5.0]).log().double()
    )
    tetra = log_volume(gram, torch.tensor([[0, 1, 2, 3]]))
    torch.testing.assert_close(tetra, torch.tensor([4.0]).double().log())  # 3*4*2 / 3!


def test_benton_trains_the_free_vertex_only(trained: dict[str, Any]) -> None:
    opts = FAST.model_copy(update={"method": "benton", "epochs": 3, "benton_volume": 1e-2})
    conn = m_connector(trained["model"], trained["data"], trained["optima"], options=opts)
    assert isinstance(conn, Connector) and conn.method == "benton"
    assert torch.equal(conn.optima, trained["optima"])
    assert (conn.points - conn.start_points).norm() > 0
    assert torch.isfinite(conn.loss_samples["train"]).all()
    assert conn.history["train_loss"].shape == (1, 4)


# --------------------------------------------------------------------------- tunnel paths


def test_tunnel_path_is_continuous_and_ends_at_the_optima(tiny_tunnel: Tunnel) -> None:
    tn, k, r = tiny_tunnel, FAST.points, FAST.path_resolution
    assert tn.points.shape == tn.line_points.shape == tn.deviations.shape
    assert tn.path_t.shape == ((k + 1) * r + 1,)
    assert tn.path_t[0] == 0 and tn.path_t[-1] == 1
    torch.testing.assert_close(tn.node_t, tn.path_t[::r], rtol=0, atol=0)
    # The piecewise-linear path passes exactly through its nodes ...
    assert torch.equal(tn.path(tn.node_t), tn.nodes)
    assert torch.equal(tn.nodes[0], tn.endpoints[0]) and torch.equal(tn.nodes[-1], tn.endpoints[1])
    assert torch.equal(tn.line(tn.node_t[[0, -1]]), tn.endpoints)
    assert torch.equal(tn.line(tn.t_points), tn.line_points)
    # ... and is continuous there: both one-sided limits approach the node.
    eps = torch.tensor(1e-7, dtype=torch.float64)
    for t, node in zip(tn.node_t[1:-1], tn.points, strict=True):
        left, right = tn.path(torch.stack([t - eps, t + eps]))
        assert (left - node).norm() < 1e-4 and (right - node).norm() < 1e-4
    # Both paths start and end at the same points, so their metrics agree there.
    for split in tn.loss_line:
        assert tn.loss_line[split][0] == tn.loss_tunnel[split][0]
        assert tn.loss_line[split][-1] == tn.loss_tunnel[split][-1]
    assert tn.middle_index == 2 and torch.equal(tn.middle, tn.points[2])


def test_polyline_interpolates_linearly() -> None:
    nodes = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 2.0]], dtype=torch.float64)
    node_t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    out = polyline(nodes, node_t, torch.tensor([0.125, 0.625], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[0.5, 1.0], [2.0, 2.0]], dtype=torch.float64))


def test_tunnel_beats_the_straight_line(tiny_tunnel: Tunnel) -> None:
    summary = tiny_tunnel.summary()
    # Independent tiny MLPs have a clear barrier on the line; the tunnel removes most of it.
    assert summary["barrier_line"] > 0.1
    assert summary["loss_tunnel_max"] < summary["loss_line_max"]
    history = tiny_tunnel.history["train_loss"]
    assert history.shape == (FAST.points, FAST.epochs + 1)
    assert history[:, -1].mean() < history[:, 0].mean()


def test_disagreement_is_zero_at_the_endpoints(tiny_tunnel: Tunnel) -> None:
    tn = tiny_tunnel
    assert tn.disagreement_split == "train"  # (X, y) data has no test split
    assert tn.disagreement_a_line[0] == 0 and tn.disagreement_a_tunnel[0] == 0
    assert tn.disagreement_b_line[-1] == 0 and tn.disagreement_b_tunnel[-1] == 0
    assert tn.disagreement_a_line[-1] == tn.disagreement_endpoints
    assert tn.disagreement_b_tunnel[0] == tn.disagreement_endpoints


def test_blocks_split_first_half_rounded_up() -> None:
    cos = torch.eye(5, dtype=torch.float64)
    cos[:3, :3] = 0.8
    cos[3:, 3:] = 0.6
    cos[:3, 3:] = cos[3:, :3] = 0.1
    cos.fill_diagonal_(1.0)
    blocks = _blocks(cos)
    assert blocks == pytest.approx({"within_first": 0.8, "within_second": 0.6, "across": 0.1})
    assert math.isnan(_blocks(torch.ones(1, 1))["within_first"])


# --------------------------------------------------------------------------- batching, seeds


def test_batched_points_train_as_if_alone() -> None:
    model, (x, y), optima = float64_setup(3)
    space = ParamSpace(model)
    basis = orthonormal_span(optima)
    starts = optima + 0.1  # any starts will do
    opts = FAST.model_copy(update={"epochs": 2})
    train = Batch.read((x, y), DEFAULT_ADAPTER)
    common = {"seed": 5, "buffers": None}
    together = _optimise_points(
        space, starts, basis, train, opts, member_ids=torch.arange(3), **common
    ).params
    for i in range(3):
        alone = _optimise_points(
            space, starts[i : i + 1], basis, train, opts, member_ids=torch.tensor([i]), **common
        ).params
        torch.testing.assert_close(alone[0], together[i], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(together[0] - starts[0], together[1] - starts[1])


def test_tunnel_and_connector_are_deterministic(trained: dict[str, Any]) -> None:
    model, data, o = trained["model"], trained["data"], trained["optima"]
    opts = FAST.model_copy(update={"epochs": 2, "points": 3})
    first, second = (tunnel(model, data, o[0], o[1], options=opts) for _ in range(2))
    assert torch.equal(first.points, second.points)
    assert torch.equal(first.loss_tunnel["train"], second.loss_tunnel["train"])
    c1, c2 = (m_connector(model, data, o, options=opts) for _ in range(2))
    assert torch.equal(c1.points, c2.points) and torch.equal(c1.samples_weights, c2.samples_weights)
    assert torch.equal(c1.loss_samples["train"], c2.loss_samples["train"])
    other = m_connector(model, data, o, options=opts.model_copy(update={"seed": 1}))
    assert not torch.equal(other.samples_weights, c1.samples_weights)


def test_tunnel_on_smoke_mnist1d_reports_train_and_test() -> None:
    data = lossatlas.load_dataset(DataConfig(n_train=512, n_test=256))
    model = lossatlas.build_model(ModelConfig(name="mlp", width=16), (40,), 10)
    pop = lossatlas.train_population(model, data, members=2, epochs=2, lr=0.1)
    opts = ConnectorOptions(points=2, epochs=1, path_resolution=2)
    tn = tunnel(model, data, pop.params[0], pop.params[1], options=opts)
    assert set(tn.loss_line) == {"train", "test"} and tn.disagreement_split == "test"
    assert tn.acc_tunnel["test"].shape == tn.path_t.shape == (7,)
    arrays = tn.to_arrays()
    assert arrays["loss_tunnel_test"].shape == (7,) and arrays["cosines"].shape == (2, 2)
    with pytest.raises(ValueError, match="shape"):
        tunnel(model, data, pop.params[0, :5], pop.params[1], options=opts)


# --------------------------------------------------------------------------- plots


def test_plots_render(tiny_tunnel: Tunnel, trained: dict[str, Any]) -> None:
    tn = tiny_tunnel
    opts = FAST.model_copy(update={"epochs": 1})
    conn = m_connector(trained["model"], trained["data"], trained["optima"], options=opts)
    figures = [
        plot_tunnel_path(
            tn.path_t,
            tn.loss_line["train"],
            tn.loss_tunnel["train"],
            acc_line=tn.acc_line["train"],
            acc_tunnel=tn.acc_tunnel["train"],
            node_t=tn.node_t,
        ),
        plot_deviation_cosines(tn.cosines),
        plot_disagreement(
            tn.path_t,
            tn.disagreement_a_line,
            tn.disagreement_b_line,
            tn.disagreement_a_tunnel,
            tn.disagreement_b_tunnel,
            node_t=tn.node_t,
        ),
        plot_connector_losses(
            conn.loss_samples["train"],
            conn.loss_optima["train"],
            conn.loss_centroid["train"],
            loss_hull=conn.loss_hull["train"],
            loss_middle=conn.loss_points["train"][0],
        ),
        plot_loss_vs_optima(
            [1, 2, 3],
            {"connector samples": [0.5, 0.7, 0.9], "optima": [0.3, 0.3, 0.3]},
            spread={"connector samples": ([0.4, 0.5, 0.6], [0.6, 0.9, 1.2])},
        ),
    ]
    for fig in figures:
        png = figure_to_png(fig)
        assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_user_module_is_left_as_found() -> None:
    model, data, optima = float64_setup(3)
    model.eval()
    before = [p.detach().clone() for p in model.parameters()]
    opts = FAST.model_copy(update={"epochs": 1, "points": 2})
    tunnel(model, data, optima[0], optima[1], options=opts)
    m_connector(model, data, optima, options=opts.model_copy(update={"method": "benton"}))
    assert not any(module.training for module in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_connector_rejects_bad_optima() -> None:
    model, data, optima = float64_setup(9)
    with pytest.raises(ValueError, match="at least 2 optima"):
        m_connector(model, data, optima[:1])
    with pytest.raises(ValueError, match="m <= 7"):
        m_connector(model, data, optima, options=ConnectorOptions(shape="subdivision"))
    with pytest.raises(ValueError, match="affinely dependent"):
        m_connector(model, data, torch.stack([optima[0], optima[0], optima[1]]))
