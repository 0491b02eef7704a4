"""Tunnel width probe: analytic quadratic bowls, censoring, batching, determinism, streaming."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from torch import nn

from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png
from lossatlas.plots.width import plot_width_distribution, plot_width_vs_norm
from lossatlas.probes.width import TunnelWidth, tunnel_width, width_over_snapshots
from tests.conftest import blobs, tiny_mlp

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Bowl(nn.Module):
    """A model whose loss (with :func:`bowl_loss`) is exactly ½ (θ-c)ᵀ diag(λ) (θ-c).

    The output ignores ``x``: it is ``sqrt(λ) * (θ - c)`` repeated per sample, and the loss is
    half its squared norm. A 2-D ``weight`` plus a 1-D ``bias`` let filter directions be tested.
    """

    def __init__(self, lam_w: torch.Tensor, lam_b: torch.Tensor, seed: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        center_w = torch.randn(lam_w.shape, generator=g, dtype=torch.float64)
        center_b = torch.randn(lam_b.shape, generator=g, dtype=torch.float64)
        self.weight = nn.Parameter(center_w.clone())
        self.bias = nn.Parameter(center_b.clone())
        self.register_buffer("cw", center_w)
        self.register_buffer("cb", center_b)
        self.register_buffer("sw", lam_w.sqrt())
        self.register_buffer("sb", lam_b.sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = ((self.weight - self.cw) * self.sw).reshape(-1)
        b = (self.bias - self.cb) * self.sb
        return torch.cat([w, b]).expand(x.shape[0], -1)


def bowl_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out**2).sum(-1).mean()


def make_bowl(seed: int = 1) -> tuple[Bowl, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The bowl, its flat λ (D,) in ParamSpace order, and dummy data."""
    g = torch.Generator().manual_seed(seed + 100)
    lam_w = torch.rand(3, 4, generator=g, dtype=torch.float64) * 4 + 0.1
    lam_b = torch.rand(3, generator=g, dtype=torch.float64) * 4 + 0.1
    lam = torch.cat([lam_w.reshape(-1), lam_b])
    data = (torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.long))
    return Bowl(lam_w, lam_b, seed), lam, data


def analytic_width(
    lam: torch.Tensor, offset: torch.Tensor, units: torch.Tensor, delta: float
) -> torch.Tensor:
    """Crossing of L0 + delta along unit rays from c + offset: ½ a t² + b t = delta."""
    a = (units**2 * lam).sum(-1)
    b = units @ (lam * offset)
    return (-b + torch.sqrt(b**2 + 2 * a * delta)) / a


# ----------------------------------------------------------------------------- correctness


def test_bowl_at_minimum_matches_analytic() -> None:
    model, lam, data = make_bowl()
    tol, delta = 1e-4, 0.3
    res = tunnel_width(model, data, n_directions=16, threshold=delta, tol=tol, loss_fn=bowl_loss)
    assert res.directions is not None and res.distances.shape == (16,)
    torch.testing.assert_close(res.directions.norm(dim=1), torch.ones(16, dtype=torch.float64))
    expected = torch.sqrt(2 * delta / (res.directions**2 * lam).sum(-1))
    assert bool(((res.distances - expected).abs() <= tol * expected).all())
    assert res.base_loss == pytest.approx(0.0, abs=1e-12)
    assert res.threshold == pytest.approx(delta)
    assert res.censored == 0 and not bool(res.censored_mask.any())
    assert res.mean == pytest.approx(float(res.distances.mean()))
    assert res.std == pytest.approx(float(res.distances.std()))
    assert res.weight_norm == pytest.approx(float(ParamSpace(model).flatten().norm()))


def test_a_crossing_below_the_initial_step_is_still_found() -> None:
    # The scan's first point may already pass the threshold: bisection then starts from 0.
    model, lam, data = make_bowl()
    tol, delta = 1e-4, 0.3
    kw = {"n_directions": 16, "threshold": delta, "tol": tol, "loss_fn": bowl_loss}
    first = tunnel_width(model, data, **kw)  # type: ignore[arg-type]
    assert first.directions is not None
    expected = torch.sqrt(2 * delta / (first.directions**2 * lam).sum(-1))
    for initial in (0.5 * float(expected.min()), 2.0 * float(expected.max())):
        res = tunnel_width(model, data, initial_step=initial, **kw)  # type: ignore[arg-type]
        assert bool(((res.distances - expected).abs() <= tol * expected).all())
        assert res.censored == 0


def test_root_search_beats_bisection_on_a_smooth_loss() -> None:
    # On a quadratic the inverse-quadratic steps converge in a few evaluations per ray, where
    # bisection needs log2(0.5 / tol) = 12.3 halvings of a doubling bracket to reach tol = 1e-4.
    model, lam, data = make_bowl()
    kw: dict[str, Any] = {"n_directions": 16, "threshold": 0.3, "loss_fn": bowl_loss}
    scan_only = tunnel_width(model, data, tol=0.999, **kw).evaluations  # no bracket is refined
    res = tunnel_width(model, data, tol=1e-4, **kw)
    search = res.evaluations - scan_only
    assert 0 < search <= 0.5 * 16 * math.log2(0.5 / 1e-4)
    assert res.directions is not None
    expected = torch.sqrt(2 * 0.3 / (res.directions**2 * lam).sum(-1))
    assert bool(((res.distances - expected).abs() <= 1e-4 * expected).all())


def test_bowl_off_centre_is_asymmetric_and_matches_analytic() -> None:
    model, lam, data = make_bowl()
    space = ParamSpace(model)
    offset = torch.randn(space.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    point = space.flatten() + 0.5 * offset
    tol, delta = 1e-4, 0.2
    res = tunnel_width(
        model,
        data,
        params=point,
        n_directions=24,
        threshold=delta,
        tol=tol,
        scan_steps=3,
        loss_fn=bowl_loss,
    )
    assert res.directions is not None
    expected = analytic_width(lam, 0.5 * offset, res.directions, delta)
    assert bool(((res.distances - expected).abs() <= tol * expected).all())
    assert res.base_loss == pytest.approx(float(0.5 * (lam * (0.5 * offset) ** 2).sum()))


def test_filter_directions_are_unit_and_skip_biases() -> None:
    model, lam, data = make_bowl()
    tol, delta = 1e-4, 0.3
    res = tunnel_width(
        model,
        data,
        n_directions=8,
        direction_kind="filter",
        threshold=delta,
        tol=tol,
        loss_fn=bowl_loss,
    )
    assert res.directions is not None and res.direction_kind == "filter"
    torch.testing.assert_close(res.directions.norm(dim=1), torch.ones(8, dtype=torch.float64))
    assert bool((res.directions[:, 12:] == 0).all())  # the 1-D bias gets no filter direction
    # Before rescaling, every filter of the direction had the norm of the weight's filter.
    weight_norm = float(model.weight.detach().norm())
    torch.testing.assert_close(res.direction_norms, torch.full((8,), weight_norm).double())
    expected = torch.sqrt(2 * delta / (res.directions**2 * lam).sum(-1))
    assert bool(((res.distances - expected).abs() <= tol * expected).all())


def test_threshold_modes_agree() -> None:
    model, _, data = make_bowl()
    space = ParamSpace(model)
    point = space.flatten() + 0.3
    common: dict[str, Any] = {"params": point, "n_directions": 6, "loss_fn": bowl_loss}
    add = tunnel_width(model, data, threshold=0.25, threshold_mode="additive", **common)
    base = add.base_loss
    absolute = tunnel_width(model, data, threshold=base + 0.25, threshold_mode="absolute", **common)
    mult = tunnel_width(
        model, data, threshold=0.25 / base, threshold_mode="multiplicative", **common
    )
    for other in (absolute, mult):
        assert other.threshold == pytest.approx(add.threshold)
        torch.testing.assert_close(other.distances, add.distances, rtol=1e-9, atol=0)
    # An absolute level the point already exceeds gives width 0 everywhere.
    below = tunnel_width(model, data, threshold=base / 2, threshold_mode="absolute", **common)
    assert bool((below.distances == 0).all()) and below.censored == 0
    with pytest.raises(ValueError, match="threshold_mode"):
        tunnel_width(model, data, threshold_mode="relative", **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="> 0"):
        tunnel_width(model, data, threshold=0.0, **common)


def test_censored_rays_are_flagged_at_max_distance() -> None:
    model, lam, data = make_bowl()
    delta, tol = 0.3, 1e-4
    probe = tunnel_width(model, data, n_directions=16, threshold=delta, loss_fn=bowl_loss)
    assert probe.directions is not None
    expected = torch.sqrt(2 * delta / (probe.directions**2 * lam).sum(-1))
    ordered = expected.sort().values
    limit = float(ordered[7] + ordered[8]) / 2  # between two widths, so no ray ends exactly there
    res = tunnel_width(
        model,
        data,
        n_directions=16,
        threshold=delta,
        tol=tol,
        max_distance=limit,
        loss_fn=bowl_loss,
    )
    far = expected > limit
    assert far.any() and (~far).any()
    assert torch.equal(res.censored_mask, far)
    assert res.censored == int(far.sum())
    assert bool((res.distances[far] == limit).all())
    near = ~far
    assert bool(((res.distances[near] - expected[near]).abs() <= tol * expected[near]).all())
    assert res.mean == pytest.approx(float(res.distances.mean()))

    # A flat loss never passes the threshold: every ray is censored, nothing diverges.
    flat = Bowl(torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    res = tunnel_width(flat, data, n_directions=5, max_distance=7.0, loss_fn=bowl_loss)
    assert res.censored == 5 and res.mean == 7.0 and res.std == 0.0


def _reference_distance(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    point: torch.Tensor,
    unit: torch.Tensor,
    level: float,
    grid: list[float],
) -> float | None:
    """Scalar loop of the documented rule: the first passing grid interval, then the crossing
    inside it to float64 precision (scipy's ``brentq``), or None when no grid point passes."""
    params = list(model.parameters())

    def excess(t: float) -> float:
        with torch.no_grad():
            nn.utils.vector_to_parameters(point + t * unit, params)
            return float(F.cross_entropy(model(x), y)) - level

    lo, hi = 0.0, None
    for t in grid:
        if not excess(t) <= 0:
            hi = t
            break
        lo = t
    if hi is None:
        return None
    return float(brentq(excess, lo, hi, xtol=1e-13, rtol=1e-13))


def test_batched_matches_per_direction_and_scalar_reference() -> None:
    model = tiny_mlp().double()
    data = blobs(n=48, dtype=torch.float64)
    kw: dict[str, Any] = {
        "threshold": 0.5,
        "max_distance": 6.0,
        "initial_step": 0.05,
        "scan_steps": 2,
        "tol": 1e-3,
        "seed": 3,
    }
    batched = tunnel_width(model, data, n_directions=10, **kw)
    assert batched.directions is not None
    assert 0 < batched.censored < 10  # both kinds of ray are exercised
    for k in range(10):
        single = tunnel_width(model, data, directions=batched.directions[k : k + 1], **kw)
        torch.testing.assert_close(
            single.distances, batched.distances[k : k + 1], rtol=1e-9, atol=0
        )
        assert bool(single.censored_mask[0]) == bool(batched.censored_mask[k])

    grid, j = [], 0
    while 0.05 * 2 ** (j / 2) < 6.0:
        grid.append(0.05 * 2 ** (j / 2))
        j += 1
    grid.append(6.0)
    reference = copy.deepcopy(model).eval()
    point = ParamSpace(model).flatten()
    for k in range(10):
        want = _reference_distance(
            reference, *data, point, batched.directions[k], batched.threshold, grid
        )
        if want is None:
            assert bool(batched.censored_mask[k]) and float(batched.distances[k]) == 6.0
        else:  # the module docs' bound, tol * true / (2 (1 - tol)), with tol = 1e-3
            bound = 1e-3 * want / (2 * (1 - 1e-3))
            assert abs(float(batched.distances[k]) - want) <= bound * (1 + 1e-9)


def test_determinism_and_model_untouched() -> None:
    model = tiny_mlp()
    data = blobs()
    before = ParamSpace(model).flatten()
    a = tunnel_width(model, data, n_directions=6, seed=11, max_distance=20.0)
    b = tunnel_width(model, data, n_directions=6, seed=11, max_distance=20.0)
    c = tunnel_width(model, data, n_directions=6, seed=12, max_distance=20.0)
    assert a.directions is not None and b.directions is not None and c.directions is not None
    assert torch.equal(a.distances, b.distances) and torch.equal(a.directions, b.directions)
    assert not torch.equal(a.directions, c.directions)
    assert torch.equal(ParamSpace(model).flatten(), before)
    assert a.evaluations > 6


def test_data_forms_and_split_errors() -> None:
    model = tiny_mlp()
    x, y = blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    a = tunnel_width(model, (x, y), n_directions=4, max_distance=20.0)
    b = tunnel_width(model, loader, n_directions=4, max_distance=20.0)
    torch.testing.assert_close(a.distances, b.distances)
    with pytest.raises(ValueError, match="no split 'test'"):
        tunnel_width(model, (x, y), split="test")


# ----------------------------------------------------------------------------- snapshots


class RowOnlyArray:
    """A (K, S, D) array-like (like a zarr array) that records and only allows single rows."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape = data.shape
        self.keys: list[Any] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        assert isinstance(key, tuple) and all(isinstance(i, int) for i in key), key
        self.keys.append(key)
        return self._data[key]


def test_width_over_snapshots_streams_every_form() -> None:
    model = tiny_mlp()
    data = blobs()
    space = ParamSpace(model)
    g = torch.Generator().manual_seed(2)
    snaps = space.flatten() * torch.linspace(0.5, 1.5, 4).unsqueeze(1)
    snaps = snaps + 0.01 * torch.randn(snaps.shape, generator=g)
    kw: dict[str, Any] = {"n_directions": 5, "threshold": 0.2, "max_distance": 30.0, "seed": 4}

    def lazily() -> Iterator[torch.Tensor]:
        yield from snaps

    from_iter = width_over_snapshots(model, data, lazily(), **kw)
    from_tensor = width_over_snapshots(model, data, snaps, **kw)
    stacked = np.stack([np.zeros_like(snaps.numpy()), snaps.numpy()])  # (K=2, S, D)
    rows = RowOnlyArray(stacked)
    from_store = width_over_snapshots(model, data, rows, member=1, **kw)
    assert rows.keys == [(1, i) for i in range(4)]  # one (D,) row at a time, never the block

    assert set(from_iter) == {
        "index",
        "weight_norm",
        "width_mean",
        "width_std",
        "censored",
        "base_loss",
        "threshold",
        "distances",
    }
    for res in (from_iter, from_tensor, from_store):
        assert res["width_mean"].shape == (4,) and res["distances"].shape == (4, 5)
        np.testing.assert_array_equal(res["index"], np.arange(4))
        np.testing.assert_allclose(res["width_mean"], from_iter["width_mean"], rtol=1e-6)
    for s in range(4):
        one = tunnel_width(model, data, params=snaps[s], **kw)
        assert from_iter["width_mean"][s] == pytest.approx(one.mean)
        assert from_iter["width_std"][s] == pytest.approx(one.std)
        assert from_iter["weight_norm"][s] == pytest.approx(float(snaps[s].norm()), rel=1e-6)
        assert from_iter["censored"][s] == one.censored

    with pytest.raises(ValueError, match="member"):
        width_over_snapshots(model, data, stacked, **kw)
    with pytest.raises(TypeError, match="params"):
        width_over_snapshots(model, data, snaps, params=snaps[0])


def test_width_over_snapshots_uses_tunnel_width_defaults() -> None:
    # Snapshots go through tunnel_width itself, so its defaults and checks are the only ones.
    model = tiny_mlp()
    data = blobs()
    snaps = ParamSpace(model).flatten() * torch.tensor([[0.9], [1.1]])
    curve = width_over_snapshots(model, data, snaps, n_directions=3)
    for s in range(2):
        one = tunnel_width(model, data, params=snaps[s], n_directions=3)
        np.testing.assert_array_equal(curve["distances"][s], one.distances.numpy())
        assert curve["threshold"][s] == one.threshold and curve["base_loss"][s] == one.base_loss
    with pytest.raises(ValueError, match="tol is relative"):
        width_over_snapshots(model, data, snaps, tol=2.0)
    with pytest.raises(TypeError, match="tunnel_width"):
        width_over_snapshots(model, data, snaps, bogus=1)


def test_width_over_snapshots_reads_a_zarr_array() -> None:
    zarr = pytest.importorskip("zarr")
    model = tiny_mlp()
    data = blobs()
    snaps = ParamSpace(model).flatten().unsqueeze(0).repeat(3, 1).unsqueeze(0)  # (1, 3, D)
    arr = zarr.create_array(
        store={}, shape=snaps.shape, dtype="float32", chunks=(1, 1, snaps.shape[2])
    )
    arr[:] = snaps.numpy()
    res = width_over_snapshots(model, data, arr, member=0, n_directions=3, max_distance=20.0)
    assert res["width_mean"].shape == (3,)
    assert np.all(res["width_mean"] == res["width_mean"][0])  # same point, same directions


# ----------------------------------------------------------------------------- plots


def test_plots_draw_png() -> None:
    model = tiny_mlp()
    data = blobs()
    width = tunnel_width(model, data, n_directions=12, threshold=0.3, max_distance=1.0)
    assert isinstance(width, TunnelWidth)
    png = figure_to_png(plot_width_distribution(width))
    assert png.startswith(PNG_MAGIC) and len(png) > 1000

    r = np.linspace(5.0, 8.0, 6)
    results = {
        "lr 4e-4": {
            "weight_norm": r,
            "width_mean": 0.5 * r,
            "width_std": np.full(6, 0.2),
            "censored": np.array([0, 0, 1, 0, 0, 2]),
        },
        "lr 8e-4": {"weight_norm": r + 1, "width_mean": 0.6 * r},
    }
    png = figure_to_png(plot_width_vs_norm(results))
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert math.isfinite(width.mean)
