"""Lines, planes, rays and simplices equal a naive per-point loop; shortcut and BN recompute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png, plotly_to_html
from lossatlas.plots.surface import plot_contour, plot_line, plot_simplex, plot_surface_3d
from lossatlas.probes import _grid
from lossatlas.probes._shortcut import find_shortcut
from lossatlas.probes.subspace import (
    dirichlet_samples,
    evaluate_simplex,
    pca_directions,
    plane_through,
    rays,
    simplex_grid,
    simplex_weights,
    surface,
    surface_through,
)
from tests.conftest import blobs, tiny_mlp

F64 = torch.float64


def naive(
    model: nn.Module, thetas: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: load each point into the module and run a plain forward pass."""
    space = ParamSpace(model)
    saved, was_training = space.flatten(), model.training
    model.eval()
    losses, accs = [], []
    with torch.no_grad():
        for theta in thetas:
            space.load(theta)
            out = model(x)
            losses.append(nn.functional.cross_entropy(out, y))
            accs.append((out.argmax(1) == y).to(x.dtype).mean())
    space.load(saved)
    model.train(was_training)
    return torch.stack(losses), torch.stack(accs)


def grid_points(s) -> torch.Tensor:  # type: ignore[no-untyped-def]
    mesh = torch.meshgrid(*s.coords, indexing="ij")
    coefs = torch.stack([m.reshape(-1) for m in mesh], dim=1)
    return s.center + coefs @ s.directions


def conv_net() -> nn.Module:
    """Input (n, 12) -> Conv1d first: the shortcut's conv case."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 12)),
        nn.Conv1d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(36, 3),
    )


def bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


class TwoBranches(nn.Module):
    """Reads the raw input twice: the shortcut must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x).tanh()


@pytest.fixture
def data64() -> tuple[torch.Tensor, torch.Tensor]:
    return blobs(48, dtype=F64)


# --------------------------------------------------------------------------- equal to naive


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("shortcut", [True, False])
@pytest.mark.parametrize("dims", [1, 2])
def test_surface_equals_naive(data64, strategy: str, shortcut: bool, dims: int) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    model = tiny_mlp().double()
    s = surface(
        model, (x, y), steps=4, dims=dims, span=(-0.5, 1.5), strategy=strategy, shortcut=shortcut
    )  # type: ignore[arg-type]
    assert s.loss.shape == (4,) * dims and s.accuracy.shape == (4,) * dims
    assert s.meta["shortcut"] is shortcut and s.meta["strategy"] == strategy
    ref_loss, ref_acc = naive(model, grid_points(s), x, y)
    torch.testing.assert_close(s.loss.reshape(-1), ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.accuracy.reshape(-1), ref_acc)


def test_rays_equal_naive_and_radial_identity(data64) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    model = tiny_mlp().double()
    space = ParamSpace(model)
    dirs = torch.randn(3, space.dim, dtype=F64)
    alphas = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    r = rays(model, (x, y), directions=dirs, alphas=alphas)
    origin = space.flatten()
    for k in range(3):
        ref, _ = naive(model, origin + alphas[:, None] * dirs[k], x, y)
        torch.testing.assert_close(r.loss[k], ref, rtol=1e-12, atol=1e-12)

    points = origin + 0.1 * torch.randn(2, space.dim, dtype=F64)
    radial = rays(model, (x, y), directions=points, alphas=[0.5, 1.0, 2.0], radial=True)
    at_point, _ = naive(model, points, x, y)
    torch.testing.assert_close(radial.loss[:, 1], at_point, rtol=1e-12, atol=1e-12)
    doubled, _ = naive(model, 2 * points, x, y)
    torch.testing.assert_close(radial.loss[:, 2], doubled, rtol=1e-12, atol=1e-12)
    assert radial.origin is None and r.loss.shape == (3, 3)
    with pytest.raises(ValueError, match="origin must be None"):
        rays(model, (x, y), directions=points, alphas=[1.0], radial=True, origin=origin)


def test_simplex_grid_equals_naive(data64) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    model = tiny_mlp().double()
    space = ParamSpace(model)
    vertices = space.flatten() + torch.randn(3, space.dim, dtype=F64)
    res = simplex_grid(model, (x, y), vertices, resolution=4, strategy="vmap")
    assert res.weights.shape == (15, 3)  # C(4 + 2, 2)
    ref, ref_acc = naive(model, res.weights @ vertices, x, y)
    torch.testing.assert_close(res.loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.accuracy, ref_acc)
    # The vertices themselves are grid points, and evaluate to exactly their own loss.
    at_vertices, _ = naive(model, vertices, x, y)
    for i in range(3):
        row = int(torch.nonzero(res.weights[:, i] == 1).squeeze())
        torch.testing.assert_close(res.loss[row], at_vertices[i], rtol=1e-13, atol=1e-13)


def test_simplex_weights_and_dirichlet() -> None:
    w = simplex_weights(3, 5)
    assert w.shape == (56, 4)  # C(5 + 3, 3)
    torch.testing.assert_close(w.sum(1), torch.ones(56, dtype=F64))
    assert (w >= 0).all() and len({tuple(r.tolist()) for r in w}) == 56
    assert all((w == torch.eye(4, dtype=F64)[i]).all(1).any() for i in range(4))
    vertices = torch.zeros(4, 10)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    d1 = dirichlet_samples(vertices, 2000, generator=g1)
    assert d1.shape == (2000, 4) and d1.dtype == torch.float32
    torch.testing.assert_close(d1.sum(1), torch.ones(2000))
    torch.testing.assert_close(d1, dirichlet_samples(vertices, 2000, generator=g2))
    # Uniform on the simplex: each weight has mean 1 / (m + 1).
    torch.testing.assert_close(d1.mean(0), torch.full((4,), 0.25), atol=0.02, rtol=0)


def test_evaluate_simplex_with_samples(data64) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    model = tiny_mlp().double()
    vertices = ParamSpace(model).flatten() + torch.randn(4, ParamSpace(model).dim, dtype=F64)
    weights = dirichlet_samples(vertices, 6, generator=torch.Generator().manual_seed(0))
    res = evaluate_simplex(model, (x, y), vertices, weights)
    ref, _ = naive(model, weights @ vertices, x, y)
    torch.testing.assert_close(res.loss, ref, rtol=1e-12, atol=1e-12)
    assert set(res.to_arrays()) == {"vertices", "weights", "loss", "accuracy"}


# --------------------------------------------------------------------------- planes and directions


def test_plane_through_points_passes_through_them(data64) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    model = tiny_mlp().double()
    space = ParamSpace(model)
    points = torch.stack([torch.zeros(space.dim, dtype=F64), *torch.randn(2, space.dim, dtype=F64)])
    origin, basis, coords = plane_through(points)
    torch.testing.assert_close(basis @ basis.T, torch.eye(2, dtype=F64))
    torch.testing.assert_close(origin + coords @ basis, points)
    s = surface_through(model, (x, y), points, steps=5, margin=0.1)
    pc = s.meta["point_coords"]
    # Every point lies inside the grid, and evaluating at its coordinates gives its loss.
    for k in range(2):
        assert s.coords[k][0] < pc[:, k].min() and s.coords[k][-1] > pc[:, k].max()
    r = rays(model, (x, y), directions=pc @ s.directions, alphas=[1.0], origin=s.center)
    at_points, _ = naive(model, points, x, y)
    torch.testing.assert_close(r.loss[:, 0], at_points, rtol=1e-10, atol=1e-10)
    ref, _ = naive(model, grid_points(s), x, y)
    torch.testing.assert_close(s.loss.reshape(-1), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="collinear"):
        plane_through(torch.stack([points[1], 2 * points[1], 3 * points[1]]))
    shifted = surface_through(model, (x, y), points, steps=3, offset=points[1])
    torch.testing.assert_close(shifted.center, points[0] + points[1])


def test_filter_directions_match_center_filter_norms() -> None:
    x, y = blobs(32)
    model = tiny_mlp()
    s = surface(model, (x, y), steps=3)
    space = ParamSpace(model)
    for slot in space.slots:
        d = s.directions[:, slot.start : slot.stop]
        if len(slot.shape) <= 1:
            assert (d == 0).all()  # biases get a zero direction
            continue
        w = s.center[slot.start : slot.stop].reshape(slot.shape[0], -1)
        for row in d:
            torch.testing.assert_close(row.reshape(slot.shape[0], -1).norm(dim=1), w.norm(dim=1))
    assert s.kind == "filter" and s.directions.shape == (2, space.dim)


def test_same_seed_same_surface_and_coordinates() -> None:
    x, y = blobs(32)
    model = tiny_mlp()
    a = surface(model, (x, y), steps=5, seed=3)
    b = surface(model, (x, y), steps=5, seed=3)
    c = surface(model, (x, y), steps=5, seed=4)
    assert torch.equal(a.directions, b.directions) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.directions, c.directions)
    assert a.coords[0][2] == 0  # the middle of a symmetric grid is exactly the center
    g = surface(model, (x, y), steps=3, directions="gaussian", dims=1)
    assert g.kind == "gaussian" and g.loss.shape == (3,)


def test_pca_directions_recover_planted_plane() -> None:
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(50, 2, generator=g, dtype=F64)).Q.T  # (2, 50)
    t = torch.linspace(0, 1, 20, dtype=F64)
    traj = torch.stack([3 * t, torch.sin(4 * t)], dim=1) @ basis + 0.5
    dirs = pca_directions(traj, k=2)
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(2, dtype=F64))
    # The span is recovered: projecting the planted basis onto it loses nothing.
    torch.testing.assert_close((basis @ dirs.T).norm(dim=1), torch.ones(2, dtype=F64))
    assert ((traj[-1] - traj[0]) @ dirs.T >= 0).all()
    about_end = pca_directions(traj, k=1, center=traj[-1])
    assert about_end.shape == (1, 50)


# --------------------------------------------------------------------------- shortcut


@pytest.mark.parametrize("make", [tiny_mlp, conv_net, bn_net], ids=["linear", "conv", "bn"])
def test_shortcut_equals_plain_evaluation(make) -> None:  # type: ignore[no-untyped-def]
    inputs = 12 if make is conv_net else 5
    x, y = blobs(40, inputs=inputs, dtype=F64)
    model = make().double()
    found, reason = find_shortcut(model, ParamSpace(model))
    assert found is not None, reason
    kwargs = {"steps": 4, "span": 2.0, "directions": "gaussian"}
    fast = surface(model, (x, y), shortcut=True, **kwargs)  # type: ignore[arg-type]
    plain = surface(model, (x, y), shortcut=False, **kwargs)  # type: ignore[arg-type]
    assert fast.meta["shortcut"] and not plain.meta["shortcut"]
    torch.testing.assert_close(fast.loss, plain.loss, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(fast.accuracy, plain.accuracy)


def test_shortcut_refuses_unsafe_models() -> None:
    for model, why in [
        (TwoBranches(), "raw input is used again"),
        (nn.Sequential(nn.BatchNorm1d(5), nn.Linear(5, 3)), "BatchNorm1d"),
    ]:
        found, reason = find_shortcut(model, ParamSpace(model))
        assert found is None and why in reason
    x, y = blobs(30, dtype=F64)
    model = TwoBranches().double()
    s = surface(model, (x, y), steps=3)
    assert not s.meta["shortcut"]
    ref, _ = naive(model, grid_points(s), x, y)
    torch.testing.assert_close(s.loss.reshape(-1), ref, rtol=1e-12, atol=1e-12)


def test_small_budget_chunks_give_the_same_answer(data64) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    model = tiny_mlp().double()
    big = surface(model, (x, y), steps=5)
    small = surface(model, (x, y), steps=5, memory_budget_mb=0.002)
    assert small.meta["sample_blocks"] > 1 and small.meta["point_chunk"] < 25
    torch.testing.assert_close(small.loss, big.loss, rtol=1e-12, atol=1e-12)


def test_loop_with_cache_sized_chunks_equals_naive(data64, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Force the per-point loop to split 48 samples into pieces, inside the stand-in and out.
    monkeypatch.setattr(_grid, "LOOP_MIN_SAMPLES", 1)
    monkeypatch.setattr(_grid, "LOOP_MIN_PASS_BYTES", 1)
    monkeypatch.setattr(_grid, "LOOP_CACHE_BYTES", 1)
    x, y = data64
    model = tiny_mlp().double()
    for shortcut in (True, False):
        s = surface(model, (x, y), steps=3, strategy="auto", shortcut=shortcut)
        assert s.meta["strategy"] == "loop"
        assert s.meta.get("sub_chunk", s.meta["sample_chunk"]) < 48
        ref, _ = naive(model, grid_points(s), x, y)
        torch.testing.assert_close(s.loss.reshape(-1), ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- BatchNorm


def naive_bn(
    model: nn.Module,
    thetas: torch.Tensor,
    batches: list[torch.Tensor],
    x,
    y,  # type: ignore[no-untyped-def]
) -> torch.Tensor:
    """Per point: reset BN statistics, accumulate them over the batches, evaluate."""
    space = ParamSpace(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    out = []
    with torch.no_grad():
        for theta in thetas:
            space.load(theta)
            model.eval()
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None
                bn.train()
            for xb in batches:
                model(xb)
            model.eval()
            out.append(nn.functional.cross_entropy(model(x), y))
    return torch.stack(out)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_bn_recompute_equals_naive(data64, strategy: str) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    model = bn_net().double()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=20)
    before = {n: b.clone() for n, b in model.state_dict().items()}
    momentum = model[1].momentum
    s = surface(model, (x, y), steps=2, bn_data=loader, strategy=strategy)  # type: ignore[arg-type]
    assert s.meta["bn_recomputed"]
    # The user's module is untouched: parameters, statistics, momentum, train flag.
    assert all(torch.equal(before[n], b) for n, b in model.state_dict().items())
    assert model[1].momentum == momentum and model.training
    batches = [xb for xb, _ in loader]
    ref = naive_bn(model, grid_points(s), batches, x, y)
    torch.testing.assert_close(s.loss.reshape(-1), ref, rtol=1e-10, atol=1e-10)
    # Without recompute the module's own (initial) statistics are used: a different answer.
    stale = surface(model, (x, y), steps=2, strategy=strategy)  # type: ignore[arg-type]
    assert not torch.allclose(stale.loss, s.loss)


def test_bn_statistics_core_loop_equals_vmap_and_restores_the_module() -> None:
    """The shared core of both BN recomputes (subspace probes, ensemble/jump)."""
    x, _ = blobs(50, inputs=5, dtype=torch.float64)
    model = nn.Sequential(
        nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 4, bias=False)
    ).double()
    model.register_buffer("scale", torch.tensor([2.0], dtype=torch.float64))  # not a statistic
    model[2].train()
    model[1].momentum = 0.3
    space = ParamSpace(model)
    g = torch.Generator().manual_seed(0)
    thetas = space.flatten() + 0.2 * torch.randn(3, space.dim, generator=g, dtype=torch.float64)
    batches = [x[:20], x[20:40], x[40:]]
    flags = [m.training for m in model.modules()]
    loop = _grid.recompute_bn_statistics(space, thetas, batches, space.buffers())
    vmapped = _grid.recompute_bn_statistics(space, thetas, batches, space.buffers(), vectorise=True)
    assert [m.training for m in model.modules()] == flags and model[1].momentum == 0.3
    for name, value in loop.items():
        assert value.shape == (3, *space.buffers()[name].shape), name
        torch.testing.assert_close(vmapped[name], value, rtol=1e-12, atol=1e-12)
    # The cumulative average of the batch means: each batch weighs the same (sizes 20, 20, 10).
    for i in range(3):
        p = space.unflatten(thetas[i])
        means = torch.stack([(xb @ p["0.weight"].T + p["0.bias"]).mean(0) for xb in batches])
        torch.testing.assert_close(loop["1.running_mean"][i], means.mean(0))
    assert loop["1.num_batches_tracked"].tolist() == [3, 3, 3]
    assert loop["scale"].tolist() == [[2.0]] * 3


def test_bn_statistics_core_accumulates_instance_norm() -> None:
    """Momentum 1/t, not None: InstanceNorm reads momentum=None as 0 and would not move."""
    x = torch.randn(8, 2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = nn.Sequential(nn.InstanceNorm1d(2, track_running_stats=True, affine=True)).double()
    space = ParamSpace(model)
    fresh = _grid.recompute_bn_statistics(
        space, space.flatten()[None], [x[:4], x[4:]], space.buffers()
    )
    expected = torch.stack([x[:4].mean((0, 2)), x[4:].mean((0, 2))]).mean(0)
    torch.testing.assert_close(fresh["0.running_mean"][0], expected)


# --------------------------------------------------------------------------- data and results


def test_dataset_split_loader_and_arrays() -> None:
    x, y = blobs(40)
    model = tiny_mlp()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    a = surface(model, loader, steps=3)
    b = surface(model, (x, y), steps=3)
    torch.testing.assert_close(a.loss, b.loss)
    with pytest.raises(ValueError, match="no split 'test'"):
        surface(model, (x, y), steps=3, split="test")
    arrays = b.to_arrays()
    assert {"coords_0", "coords_1", "loss", "accuracy", "center", "directions"} <= set(arrays)
    assert arrays["loss"].shape == (3, 3) and b.loss.dtype == torch.float32
    torch.testing.assert_close(
        b.project(b.center + 0.5 * b.directions[1]), torch.tensor([[0.0, 0.5]])
    )


# --------------------------------------------------------------------------- plots


def test_plots_draw() -> None:
    x, y = blobs(30)
    model = tiny_mlp()
    line = surface(model, (x, y), steps=5, dims=1)
    plane = surface(model, (x, y), steps=5)
    assert figure_to_png(plot_line(line, log=True))
    assert figure_to_png(plot_contour(plane, marks={"center": (0.0, 0.0)}, log=True))
    assert figure_to_png(plot_contour(plane, path=[[0.0, 0.0], [0.5, 0.5]]))
    assert b"plotly" in plotly_to_html(plot_surface_3d(plane, log=True)).lower()
    vertices = ParamSpace(model).flatten() + torch.randn(3, ParamSpace(model).dim)
    assert figure_to_png(plot_simplex(simplex_grid(model, (x, y), vertices, resolution=3)))
    four = torch.cat([vertices, vertices[:1] * 2])
    assert figure_to_png(plot_simplex(simplex_grid(model, (x, y), four, resolution=2), log=True))


# --------------------------------------------------------------------------- stacked fast path


def relu_mlp() -> nn.Module:
    """Flatten -> Linear -> ReLU -> Linear -> GELU -> Linear: the stacked tail's case."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(5, 6),
        nn.ReLU(),
        nn.Linear(6, 4),
        nn.GELU(),
        nn.Linear(4, 3),
    )


@pytest.mark.parametrize("make", [tiny_mlp, relu_mlp], ids=["tanh", "relu-gelu"])
@pytest.mark.parametrize("budget", [512.0, 0.002], ids=["one-block", "many-blocks"])
def test_stacked_grid_equals_naive_loop(data64, make, budget: float) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    model = make().double()
    s = surface(model, (x, y), steps=5, span=(-0.5, 1.5), memory_budget_mb=budget)
    assert s.meta["strategy"] == "stacked" and s.meta["shortcut"]
    if budget < 1:
        assert s.meta["sample_blocks"] > 1 and s.meta["point_chunk"] < 25
    ref_loss, ref_acc = naive(model, grid_points(s), x, y)
    torch.testing.assert_close(s.loss.reshape(-1), ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.accuracy.reshape(-1), ref_acc)


def test_stacked_accuracy_breaks_ties_like_argmax() -> None:
    # Zero weights: every logit equals its bias; tied biases make argmax pick the first class.
    x, y = blobs(30, dtype=F64)
    model = tiny_mlp().double()
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([0.5, 0.5, 0.5], dtype=F64))
    dirs = torch.zeros(1, ParamSpace(model).dim, dtype=F64)
    s = surface(model, (x, y), directions=dirs, steps=3)
    assert s.meta["strategy"] == "stacked"
    expected = (y == 0).to(F64).mean()
    torch.testing.assert_close(s.accuracy, expected.expand(3))


def test_stacked_falls_back_on_negative_labels(data64) -> None:  # type: ignore[no-untyped-def]
    x, y = data64
    y = y.clone()
    y[:5] = -100  # cross_entropy's ignore_index: the generic path handles it
    model = tiny_mlp().double()
    s = surface(model, (x, y), steps=3)
    assert s.meta["strategy"] != "stacked"
    plain = surface(model, (x, y), steps=3, shortcut=False)
    torch.testing.assert_close(s.loss, plain.loss, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize(
    ("strategy", "shortcut", "path"),
    [("loop", True, "loop"), ("loop", False, "loop"), ("auto", True, "stacked")],
)
def test_points_shared_over_threads_equal_one_thread_and_naive(  # type: ignore[no-untyped-def]
    data64, strategy: str, shortcut: bool, path: str
) -> None:
    """The per-point loop and the stacked path share points out over threads of one torch
    thread each (a replica of the module per thread): the same numbers on 1, 2 and 3."""
    x, y = data64
    model = tiny_mlp().double()
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs[threads] = surface(
                model,
                (x, y),
                steps=7,
                strategy=strategy,  # type: ignore[arg-type]
                shortcut=shortcut,
                memory_budget_mb=0.01,  # a few points per call, so there is work to share
            )
    finally:
        torch.set_num_threads(before)
    assert runs[3].meta["strategy"] == path and runs[3].meta["threads"] == 3
    assert "threads" not in runs[1].meta
    for threads in (2, 3):
        assert torch.equal(runs[threads].loss, runs[1].loss)
        assert torch.equal(runs[threads].accuracy, runs[1].accuracy)
    ref_loss, ref_acc = naive(model, grid_points(runs[3]), x, y)
    torch.testing.assert_close(runs[3].loss.reshape(-1), ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(runs[3].accuracy.reshape(-1), ref_acc)
    assert torch.equal(ParamSpace(model).flatten(), runs[3].center)  # the module is untouched
