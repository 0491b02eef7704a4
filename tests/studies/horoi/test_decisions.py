"""Every Horoi claim's decision function on a negative control (data without the effect: it
must not hold) and a positive control (data with it: it must hold), built from small seeded
synthetic samples of known structure (CLAIMS.md rule 2)."""

from __future__ import annotations

import numpy as np
import pytest

from lossatlas.analysis.embedding import score_embeddings
from lossatlas.analysis.topology import (
    LossTopology,
    finite_persistence,
    shuffled_h0_persistence,
)
from lossatlas.studies.horoi.compare import decide_landscape_topology, decide_separation
from lossatlas.studies.horoi.embed import CONNECTED, decide_phate_vs_linear
from lossatlas.studies.horoi.jumps import (
    decide_jump_retrain,
    recovery_fractions,
    worst_size_recovery,
)

SIZES = np.tile([0.25, 0.5, 0.75, 1.0], 4)  # 4 sizes x 4 directions, seed-major like the study
EPOCHS = np.arange(41)


# --------------------------------------------------------------------------- B1 jump_retrain


def _jump_sets(
    rng: np.random.Generator, *, rate: float, size_effect: bool, sets: int = 6
) -> tuple[list[np.ndarray], list[np.ndarray], list[float], list[float]]:
    """Loss curves ``L* + rise * exp(-rate * t)`` per jump; ``rise`` grows with the size (or is
    drawn independently of it); ``rate = 0``: never retrained."""
    sizes, starts, recovered, controls = [], [], [], []
    for _ in range(sets):
        optimum = 0.2 + 0.05 * rng.random()
        rise = 80 * SIZES**2 if size_effect else 40 * rng.random(SIZES.size) + 1
        rise = rise * np.exp(0.1 * rng.normal(size=SIZES.size))
        curves = optimum + rise[:, None] * np.exp(-rate * EPOCHS)[None, :]
        fractions = recovery_fractions(curves, optimum)
        sizes.append(SIZES)
        starts.append(curves[:, 0])
        recovered.append(worst_size_recovery(fractions[:, -1], SIZES))
        controls.append(worst_size_recovery(fractions[:, 0], SIZES))
    return sizes, starts, recovered, controls


def test_jump_retrain_positive_control() -> None:
    rng = np.random.default_rng(0)
    decision, parts = decide_jump_retrain(*_jump_sets(rng, rate=0.3, size_effect=True))
    assert parts["start_rises"].verdict == "holds"
    assert parts["recovers"].verdict == "holds"
    assert decision.verdict == "holds" and decision.evidence.replicates == 6
    assert decision.evidence.control is not None
    assert decision.evidence.control.verdict == "fails"  # not retrained: 0 recovered


@pytest.mark.parametrize(
    ("rate", "size_effect", "failing"),
    [(0.0, True, "recovers"), (0.01, True, "recovers"), (0.3, False, "start_rises")],
)
def test_jump_retrain_negative_controls(rate: float, size_effect: bool, failing: str) -> None:
    """Not retrained (or barely: 33% back after 40 epochs), or a start loss that ignores the
    jump size: the claim must not hold."""
    rng = np.random.default_rng(1)
    decision, parts = decide_jump_retrain(*_jump_sets(rng, rate=rate, size_effect=size_effect))
    assert parts[failing].verdict != "holds"
    assert decision.verdict != "holds"


def test_recovery_fractions_leave_out_jumps_that_did_not_rise() -> None:
    curves = np.array([[5.0, 3.0, 1.0], [0.5, 0.4, 0.3], [np.nan] * 3])
    out = recovery_fractions(curves, 1.0)
    np.testing.assert_allclose(out[0], [0.0, 0.5, 1.0])
    assert np.isnan(out[1:]).all()


# --------------------------------------------------------------------------- B2 phate_vs_linear


def _star_sets(faithful: bool, sets: int = 4) -> list[dict[str, dict[str, float]]]:
    """Trajectories that travel: 8 rays from one point, each along its own orthogonal axis of
    a 30-D space, so no plane holds more than two of them. ``CONNECTED`` is a star chart
    (ray ``i`` drawn at angle ``2 pi i / 8``, distance along it kept: a faithful nonlinear
    view) or, as the negative control, a random linear projection; the rivals are PCA and
    another random linear projection (the random plane)."""
    out = []
    for s in range(sets):
        rng = np.random.default_rng(100 + s)
        axes = np.linalg.qr(rng.normal(size=(30, 30)))[0][:8]
        t = np.linspace(0.5, 1.5, 12)
        X = np.concatenate([np.outer(t, axis) for axis in axes])
        X += 1e-3 * rng.normal(size=X.shape)
        angles = 2 * np.pi * np.arange(8) / 8
        chart = np.concatenate([np.c_[t * np.cos(a), t * np.sin(a)] for a in angles])
        centred = X - X.mean(axis=0)
        pca = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
        views = {
            CONNECTED: chart if faithful else X @ rng.normal(size=(30, 2)),
            "pca": pca,
            "random_plane": X @ rng.normal(size=(30, 2)),
        }
        views["phate"] = views[CONNECTED]
        ids = np.repeat(np.arange(8), 12)
        labels = {"trajectory": ids, "size": np.tile(np.arange(12), 8), "direction": ids}
        out.append(score_embeddings(X, views, labels=labels, k=6))
    return out


def test_phate_vs_linear_positive_control() -> None:
    decision, parts = decide_phate_vs_linear(_star_sets(faithful=True))
    assert decision.verdict == "holds", parts
    assert decision.evidence.control is not None
    assert decision.evidence.control.verdict != "holds"


def test_phate_vs_linear_negative_control_a_random_projection() -> None:
    decision, _ = decide_phate_vs_linear(_star_sets(faithful=False))
    assert decision.verdict != "holds"


# --------------------------------------------------------------------------- B3/B4 topology


def _landscape(seed: int, rugged: bool) -> tuple[float, np.ndarray]:
    """One sample set: 8 trajectories of 15 points in a plane, its loss smooth (a bowl plus a
    second, shallower basin) or rugged (the same losses shuffled across the samples); returns
    the statistic and its null."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    t = np.linspace(0.1, 2.0, 15)
    x = np.concatenate([np.c_[t * np.cos(a), t * np.sin(a)] for a in angles])
    x += 0.01 * rng.normal(size=x.shape)
    loss = np.sum(x**2, axis=1) - 1.5 * np.exp(-4 * np.sum((x - [1.5, 0]) ** 2, axis=1))
    if rugged:
        loss = rng.permutation(loss)
    topo = LossTopology(k=6, graph_from="features", filtration="rank", connect=True).fit(x, loss)
    null = shuffled_h0_persistence(topo.edges_, topo.values_, rng, 100)
    return finite_persistence(topo.diagrams_[0]), null


def test_topology_summary_positive_control_a_smooth_landscape() -> None:
    values, nulls = zip(*[_landscape(s, rugged=False) for s in range(4)], strict=True)
    decision = decide_landscape_topology(list(values), np.stack(nulls))
    assert decision.verdict == "holds"
    assert decision.evidence.control is not None
    assert decision.evidence.control.verdict != "holds"


def test_topology_summary_negative_control_shuffled_losses() -> None:
    values, nulls = zip(*[_landscape(s, rugged=True) for s in range(4)], strict=True)
    assert decide_landscape_topology(list(values), np.stack(nulls)).verdict != "holds"


def test_separation_positive_control_smooth_against_rugged() -> None:
    good = [_landscape(s, rugged=False) for s in range(3)]
    poor = [_landscape(10 + s, rugged=True) for s in range(3)]
    decision = decide_separation(
        [g[0] for g in good], [p[0] for p in poor],
        np.stack([g[1] for g in good]), np.stack([p[1] for p in poor]),
    )  # fmt: skip
    assert decision.verdict == "holds"
    assert decision.evidence.estimate is not None and decision.evidence.estimate < 0
    assert decision.evidence.replicates == 3


@pytest.mark.parametrize("rugged", [False, True])
def test_separation_negative_control_two_networks_alike(rugged: bool) -> None:
    a = [_landscape(s, rugged=rugged) for s in range(3)]
    b = [_landscape(20 + s, rugged=rugged) for s in range(3)]
    decision = decide_separation(
        [x[0] for x in a], [x[0] for x in b],
        np.stack([x[1] for x in a]), np.stack([x[1] for x in b]),
    )  # fmt: skip
    assert decision.verdict != "holds"
