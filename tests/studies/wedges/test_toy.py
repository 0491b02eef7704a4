"""Toy n-wedge landscape and its experiments: brute-force distances, thresholds, tunnels, seeds."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lossatlas.seeding import make_generator
from lossatlas.studies.wedges.config import ToyConfig, ToyVariant
from lossatlas.studies.wedges.toy import (
    ToyResult,
    WedgeLandscape,
    hyperplane_threshold,
    radial_probe,
    run_toy,
    tunnel,
)
from lossatlas.studies.wedges.toy.hyperplane import decide_threshold, decide_threshold_robust
from lossatlas.studies.wedges.toy.tunnel import decide_toy_tunnel
from tests._presets import smoke_toy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def brute_force_distance(land: WedgeLandscape, points: torch.Tensor) -> torch.Tensor:
    """min over every n-subset S of the distance to the slab W_S, by explicit projection.

    In frame coordinates W_S = {z : |z_i| <= ε for i ∉ S}; its nearest point clamps the thin
    coordinates into [-ε, ε]. Independent of the sort-based formula in ``WedgeLandscape.loss``.
    """
    z = land.to_frame(points)
    best = torch.full(points.shape[:-1], math.inf, dtype=points.dtype)
    for long_axes in itertools.combinations(range(land.dim), land.n_long):
        thin = torch.ones(land.dim, dtype=torch.bool)
        thin[list(long_axes)] = False
        projected = torch.where(thin, z.clamp(-land.epsilon, land.epsilon), z)
        best = torch.minimum(best, (z - projected).norm(dim=-1))
    return best


def distance_to_wedge(
    land: WedgeLandscape, points: torch.Tensor, long_axes: torch.Tensor
) -> torch.Tensor:
    """Distance from each point (B, D) to the wedge whose long axes are ``long_axes`` (B, n)."""
    z = land.to_frame(points)
    thin = torch.ones_like(z, dtype=torch.bool).scatter(-1, long_axes, False)
    projected = torch.where(thin, z.clamp(-land.epsilon, land.epsilon), z)
    return (z - projected).norm(dim=-1)


# --------------------------------------------------------------------------- the landscape


def test_paper_formula_by_hand() -> None:
    land = WedgeLandscape(4, 2)
    point = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    # The D - n = 2 smallest squares are 0.25 and 1.
    assert float(land.loss(point)) == pytest.approx(math.sqrt(1.25))
    assert land.nearest_wedge(point).tolist() == [0, 3]


@pytest.mark.parametrize(
    ("dim", "n_long", "epsilon", "rotation", "widths"),
    [
        (6, 2, 0.0, False, "equal"),
        (6, 2, 0.3, False, "equal"),
        (5, 3, 0.2, True, "equal"),
        (6, 1, 0.25, True, "random"),
        (5, 0, 0.1, False, "random"),
    ],
)
def test_loss_matches_brute_force(
    dim: int, n_long: int, epsilon: float, rotation: bool, widths: str
) -> None:
    land = WedgeLandscape(dim, n_long, epsilon, rotation, widths, seed=3)  # type: ignore[arg-type]
    points = land.sample_init(64, make_generator(0, "test"), scale=1.0)
    best = brute_force_distance(land, points)
    torch.testing.assert_close(land.loss(points), best)
    # The reported wedge is a nearest one (several can tie when coordinates sit inside ε).
    nearest = land.nearest_wedge(points)
    assert (nearest.diff(dim=-1) > 0).all()
    torch.testing.assert_close(distance_to_wedge(land, points, nearest), best)


def test_rotated_loss_is_euclidean_distance_in_point_space() -> None:
    land = WedgeLandscape(5, 2, epsilon=0.2, rotation=True, seed=1)
    q = land.rotation_matrix
    assert q is not None
    torch.testing.assert_close(q.T @ q, torch.eye(5, dtype=torch.float64))
    points = land.sample_init(32, make_generator(1, "test"))
    # Distance to each rotated slab Q W_S, computed in P-space from the projection Q proj(Qᵀ P).
    best = torch.full((32,), math.inf, dtype=torch.float64)
    for long_axes in itertools.combinations(range(5), 2):
        thin = torch.ones(5, dtype=torch.bool)
        thin[list(long_axes)] = False
        z = points @ q
        projected = torch.where(thin, z.clamp(-0.2, 0.2), z) @ q.T
        best = torch.minimum(best, (points - projected).norm(dim=-1))
    torch.testing.assert_close(land.loss(points), best)
    torch.testing.assert_close(land.from_frame(land.to_frame(points)), points)


def test_batched_shapes_and_gradients() -> None:
    land = WedgeLandscape(6, 2, epsilon=0.1, rotation=True, widths="random", seed=2)
    points = land.sample_init(12, make_generator(2, "test")).view(3, 4, 6)
    assert land.loss(points).shape == (3, 4)
    assert land.nearest_wedge(points).shape == (3, 4, 2)
    x = points[0, :2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(land.loss, (x,))
    # On a wedge the loss is exactly 0 and the safe sqrt gives a zero (not NaN) gradient.
    on_wedge = land.from_frame(
        torch.tensor([[5.0, -3.0, 0.0, 0.05, 0.0, 0.0]], dtype=torch.float64)
    )
    on_wedge.requires_grad_(True)
    value = land.loss(on_wedge)
    (grad,) = torch.autograd.grad(value.sum(), on_wedge)
    assert float(value.detach()) == 0.0
    assert torch.isfinite(grad).all() and float(grad.abs().max()) == 0.0


def test_landscape_seeding_and_validation() -> None:
    a = WedgeLandscape(8, 3, rotation=True, widths="random", seed=5)
    b = WedgeLandscape(8, 3, rotation=True, widths="random", seed=5)
    c = WedgeLandscape(8, 3, rotation=True, widths="random", seed=6)
    assert a.rotation_matrix is not None and b.rotation_matrix is not None
    assert c.rotation_matrix is not None
    assert torch.equal(a.rotation_matrix, b.rotation_matrix) and torch.equal(a.widths, b.widths)
    assert not torch.equal(a.rotation_matrix, c.rotation_matrix)
    assert float(a.widths.min()) >= 0.5 and float(a.widths.max()) <= 2.0
    assert a.wedge_count == math.comb(8, 3)
    s1 = a.sample_init(4, make_generator(0, "x"), scale=3.0)
    s2 = a.sample_init(4, make_generator(0, "x"), scale=3.0)
    assert s1.shape == (4, 8) and s1.dtype == torch.float64 and torch.equal(s1, s2)
    with pytest.raises(ValueError, match="n_long"):
        WedgeLandscape(4, 4)
    with pytest.raises(ValueError, match="epsilon"):
        WedgeLandscape(4, 1, epsilon=-1.0)
    with pytest.raises(ValueError, match="last dimension"):
        a.loss(torch.zeros(3, 5, dtype=torch.float64))


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        ToyConfig(dim=4, n_long=4)
    with pytest.raises(ValidationError):
        ToyConfig(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ToyVariant(dim=3, n_long=3)
    assert ToyVariant(dim=20, n_long=5, rotation=True, epsilon=0.02, widths="random").label() == (
        "D20_n5_rot_eps0.02_rw"
    )


# --------------------------------------------------------------------------- experiments


@pytest.fixture(scope="module")
def smoke() -> ToyResult:
    return run_toy(smoke_toy(), seed=0)


def _fast(**options: object) -> ToyConfig:
    base: dict[str, object] = {
        "trials": 6,
        "steps": 400,
        "variants": [],
        "figures": False,
        "interactive": False,
    }
    base.update(options)
    return ToyConfig(**base)  # type: ignore[arg-type]


def test_hyperplane_threshold_lands_at_d_minus_n_for_several_shapes() -> None:
    cfg = _fast(
        dim=10,
        n_long=3,
        rotation=True,
        variants=[
            ToyVariant(dim=12, n_long=6, rotation=True),
            ToyVariant(dim=8, n_long=2, rotation=True),
        ],
    )
    result = hyperplane_threshold(cfg, seed=0)
    robust = result.claim("toy.hyperplane_threshold_robust")
    rows = robust.measured["variants"]
    assert [(row["D"], row["n"]) for row in rows] == [(10, 3), (12, 6), (8, 2)]
    for row in rows:
        # Geometry: a d-plane meets an n-dim wedge iff d >= D - n; the criterion allows +1.
        assert row["expected_d_lim"] <= row["d_lim"] <= row["expected_d_lim"] + 1, row
    assert robust.holds is True
    assert robust.evidence is not None and robust.evidence.ci95 is not None
    assert robust.evidence.control is not None and robust.evidence.control.verdict == "fails"
    main = result.arrays["hyperplane_success_rate"]
    assert main[: 7 - 1].max() < 0.5  # d <= D - n - 1 = 6: the plane misses every wedge
    assert main[7:].min() == 1.0  # d >= D - n + 1: always succeeds
    claim = result.claim("toy.hyperplane_threshold")
    assert claim.holds is True and claim.measured["expected_d_lim"] == 7
    assert set(result.arrays) >= {
        "hyperplane_d",
        "hyperplane_success_rate",
        "hyperplane_relative_loss",
        "hyperplane_D12_n6_rot_success_rate",
    }
    assert result.arrays["hyperplane_relative_loss"].shape == (10, 6)


def _step_counts(dim: int, first: int, trials: int) -> np.ndarray:
    """Successful planes per d = 1..dim: none below ``first``, all from ``first`` on."""
    return np.where(np.arange(1, dim + 1) >= first, trials, 0)


def test_threshold_decisions_have_negative_and_positive_controls() -> None:
    trials = 12
    # Positive: wedges of n long axes, success from d = D - n on (geometry's threshold).
    shapes = [(20, 5), (10, 3), (12, 6), (8, 2)]
    wedges = [(_step_counts(dim, dim - n, trials), dim - n) for dim, n in shapes]
    # Negative: isolated minima (n = 0) on the same landscapes, success only at d = D.
    isolated = [_step_counts(dim, dim, trials) for dim, _ in shapes]
    for (counts, n_thin), control in zip(wedges, isolated, strict=True):
        assert decide_threshold(counts, trials, n_thin).verdict == "holds"
        assert decide_threshold(control, trials, n_thin).verdict == "fails"
    robust = decide_threshold_robust(wedges, trials, controls=isolated)
    assert robust.verdict == "holds"
    assert robust.evidence.estimate == 1.0 and robust.evidence.ci95[0] > 0.5
    assert robust.evidence.control is not None and robust.evidence.control.verdict == "fails"
    assert robust.evidence.replicates == trials * len(shapes)
    # The negative control decided as if it were the claim: it must not hold.
    swapped = [(c, n) for c, (_, n) in zip(isolated, wedges, strict=True)]
    as_claim = decide_threshold_robust(swapped, trials)
    assert as_claim.verdict == "fails"
    # One landscape whose threshold sits elsewhere makes the whole claim fail.
    shifted = [*wedges[:-1], (_step_counts(8, 8, trials), 6)]
    assert decide_threshold_robust(shifted, trials, controls=isolated).verdict == "fails"
    # A test that also "holds" on isolated minima cannot vouch for the wedges.
    assert (
        decide_threshold_robust(wedges, trials, controls=[c for c, _ in wedges]).verdict
        == "inconclusive"
    )


def test_hyperplane_threshold_does_not_depend_on_rotation() -> None:
    plain = hyperplane_threshold(_fast(dim=9, n_long=3), seed=1)
    rotated = hyperplane_threshold(_fast(dim=9, n_long=3, rotation=True), seed=1)
    d_plain = plain.claim("toy.hyperplane_threshold").measured["d_lim"]
    d_rotated = rotated.claim("toy.hyperplane_threshold").measured["d_lim"]
    assert d_plain == d_rotated == 6


def test_tunnel_moves_only_normal_to_the_line_and_lowers_the_barrier(smoke: ToyResult) -> None:
    arrays = smoke.arrays
    deviation = arrays["tunnel_deviation"]  # (T, k, D)
    ends = arrays["tunnel_endpoints"]  # (T, 2, D)
    u = ends[:, 1] - ends[:, 0]
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    along = np.einsum("tkd,td->tk", deviation, u)
    assert np.abs(along).max() < 1e-10 * np.abs(deviation).max()
    assert np.abs(arrays["tunnel_deviation_dot_u"]).max() < 1e-10
    wedges = arrays["tunnel_endpoint_wedges"]
    assert (wedges[:, 0] != wedges[:, 1]).any(-1).all()
    straight_max = arrays["tunnel_straight_loss"].max(-1)
    assert (arrays["tunnel_path_loss"].max(-1) < straight_max).all()
    assert (arrays["tunnel_split_loss"].max(-1) < 0.05 * straight_max).all()
    k = smoke_toy().split_points
    assert arrays["tunnel_cosine"].shape == (2, k, k)
    np.testing.assert_allclose(np.diagonal(arrays["tunnel_cosine"], axis1=1, axis2=2), 1.0)
    claim = smoke.claim("toy.tunnel")
    measured = claim.measured
    assert measured["barrier_straight"] > 0
    assert measured["max_loss_tunnel"] < measured["barrier_straight"]
    expected, _, _ = decide_toy_tunnel(
        list(measured["barrier_ratio_per_trial"]),
        measured["equal_lag_contrast_per_trial"],
        smoke_toy().barrier_fraction,
    )
    assert claim.verdict == expected.verdict
    # The jointly optimised path is reported beside the paper's recipe, under the same
    # constraints: its points stay in their hyperplanes too.
    assert arrays["tunnel_joint_loss"].shape == arrays["tunnel_path_loss"].shape
    assert measured["joint_barrier_ratio"] < 1.0


def test_radial_probe_matches_the_analytic_rates() -> None:
    cfg = _fast(dim=12, n_long=4, radial_points=3, directions=400)
    result = radial_probe(cfg, seed=0)
    claim = result.claim("toy.radial_probe")
    measured = claim.measured
    assert measured["rate_mean"] == pytest.approx(measured["predicted_mean"], rel=0.03)
    assert measured["rate_cv"] == pytest.approx(measured["predicted_cv"], rel=0.2)
    assert claim.holds is (measured["rate_cv"] < cfg.cv_threshold)
    # Along the wedge's own axes: 0 on the n long axes, 1 on the D - n thin ones.
    axis = np.sort(result.arrays["radial_axis_rates"], axis=-1)
    # (Up to the probe points' residual loss ~1e-5, divided by the smallest step 0.01.)
    np.testing.assert_allclose(axis[:, :4], 0.0, atol=5e-3)
    np.testing.assert_allclose(axis[:, 4:], 1.0, atol=5e-3)
    assert measured["axis_rate_cv"] == pytest.approx(math.sqrt(4 / 8), rel=1e-2)
    assert result.arrays["radial_rates"].shape == (3, 400)


def test_run_toy_is_deterministic_and_seed_dependent(smoke: ToyResult) -> None:
    again = run_toy(smoke_toy(figures=False), seed=0)
    assert set(again.arrays) == set(smoke.arrays)
    for name, value in smoke.arrays.items():
        np.testing.assert_array_equal(again.arrays[name], value, err_msg=name)
    assert [c.to_json() for c in again.claims] == [
        {**c.to_json(), "figures": []} for c in smoke.claims
    ]
    other = tunnel(smoke_toy(figures=False), seed=1)
    assert not np.array_equal(other.arrays["tunnel_endpoints"], smoke.arrays["tunnel_endpoints"])


def test_claims_are_complete_and_json_ready(smoke: ToyResult) -> None:
    ids = [c.id for c in smoke.claims]
    assert ids == [
        "toy.hyperplane_threshold",
        "toy.hyperplane_threshold_robust",
        "toy.tunnel",
        "toy.radial_probe",
    ]
    for claim in smoke.claims:
        assert claim.paper_setup == "toy n-wedge model (paper §3)"
        assert "D=8, n=2" in claim.setup and "rotation=False" in claim.setup
        assert claim.criterion and claim.verdict in {"holds", "fails", "inconclusive"}
        assert claim.evidence is not None
        assert set(claim.figures) <= set(smoke.figures)
        json.dumps(claim.to_json(), allow_nan=False)


def test_figures_are_png_bytes(smoke: ToyResult) -> None:
    assert set(smoke.figures) == {
        "toy_hyperplane.png",
        "toy_tunnel_loss.png",
        "toy_tunnel_cosine.png",
        "toy_slice.png",
        "toy_radial.png",
    }
    for name, data in smoke.figures.items():
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, name
    html = hyperplane_threshold(_fast(dim=6, n_long=2, steps=100, interactive=True), seed=0)
    fragment = html.interactive["toy_hyperplane.html"]
    assert fragment.lstrip().startswith(b"<div") and b"<html" not in fragment
