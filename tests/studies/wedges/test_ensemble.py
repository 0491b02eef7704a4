"""Snapshot ensembles (PAPERS A7): array statistics by hand, cyclic snapshots, the experiment."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from pydantic import ValidationError
from torch import nn

import lossatlas.analysis.ensembles as ens_module
from lossatlas.analysis import (
    accuracy_difference_se,
    angle_matrix,
    disagreement,
    disagreement_matrix,
    ensemble_accuracy,
    mean_offdiagonal,
    running_ensemble_accuracy,
    softmax,
    successive_angles,
    successive_disagreement,
    swa_average,
    vector_angle,
)
from lossatlas.batchnorm import recompute_bn
from lossatlas.config import DataConfig, ModelConfig, ScheduleConfig
from lossatlas.data import load_dataset
from lossatlas.models import build_model
from lossatlas.optim import make_schedule
from lossatlas.params import ParamSpace
from lossatlas.plots.ensembles import (
    plot_ensemble_accuracy,
    plot_ensemble_diversity,
    plot_running_ensemble,
)
from lossatlas.populations.cyclic import cyclic_snapshots
from lossatlas.populations.train import initial_points
from lossatlas.studies.wedges._snapshot_measures import measure_snapshots
from lossatlas.studies.wedges.config import EnsembleConfig
from lossatlas.studies.wedges.ensemble import (
    EnsembleResult,
    ensemble_claims,
    ensemble_experiment,
    ensemble_figures,
    stable_lr_max,
)
from tests import _presets
from tests.conftest import blobs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    # The models here are tiny: a second intra-op thread buys nothing, and on a shared 2-core
    # machine its spin-waiting made this file 7x slower (65 s instead of 9 s) under load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- analysis


def test_ensemble_of_identical_members_is_the_member() -> None:
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(1, 50, 4)))
    y = rng.integers(0, 4, size=50)
    single = float((probs[0].argmax(-1) == y).mean())
    stacked = np.repeat(probs, 5, axis=0)
    assert ensemble_accuracy(stacked, y) == single
    np.testing.assert_array_equal(running_ensemble_accuracy(stacked, y), np.full(5, single))


def test_ensemble_averages_probabilities_not_votes() -> None:
    # Sample 0: two members lean weakly to class 0, one is sure of class 1 -> average picks 1
    # (a majority vote would pick 0). Sample 1: all pick class 0.
    probs = np.array(
        [
            [[0.55, 0.45], [0.9, 0.1]],
            [[0.55, 0.45], [0.8, 0.2]],
            [[0.0, 1.0], [0.7, 0.3]],
        ]
    )
    y = np.array([1, 0])
    assert ensemble_accuracy(probs, y) == 1.0
    # First member alone gets sample 0 wrong; two members still do; all three get it right.
    np.testing.assert_allclose(running_ensemble_accuracy(probs, y), [0.5, 0.5, 1.0])


def test_softmax_is_stable_and_normalised() -> None:
    p = softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])


def test_disagreement_by_hand() -> None:
    a = np.array([0, 1, 2, 3])
    assert disagreement(a, a) == 0.0
    assert disagreement(a, np.array([0, 1, 0, 0])) == 0.5
    preds = np.array([[0, 1, 2, 3], [0, 1, 0, 0], [1, 1, 2, 3]])
    expected = np.array([[0, 0.5, 0.25], [0.5, 0, 0.75], [0.25, 0.75, 0]])
    np.testing.assert_allclose(disagreement_matrix(preds), expected)
    np.testing.assert_allclose(successive_disagreement(preds), [0.5, 0.75])
    assert mean_offdiagonal(expected) == pytest.approx(0.5)
    assert math.isnan(mean_offdiagonal(np.zeros((1, 1))))


def test_angles_by_hand() -> None:
    assert vector_angle([1.0, 0.0], [0.0, 3.0]) == pytest.approx(90.0)
    w = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 1.0], [0.0, -1.0, -1.0]])
    np.testing.assert_allclose(successive_angles(w), [90.0, 45.0, 180.0], atol=1e-12)
    m = angle_matrix(w)
    assert m.shape == (4, 4) and np.all(np.diag(m) == 0)
    np.testing.assert_allclose(m, m.T)
    # From an origin: the displacements (1, 0) and (0, 1) from (1, 1) are orthogonal.
    pts = np.array([[2.0, 1.0], [1.0, 2.0]])
    assert successive_angles(pts)[0] == pytest.approx(math.degrees(2 * math.atan(1 / 3)))
    assert successive_angles(pts, origin=np.array([1.0, 1.0]))[0] == pytest.approx(90.0)


def test_tiny_angles_stay_accurate() -> None:
    # arccos of a dot product would return 0 (or noise) for an angle of 1e-6 rad.
    eps = 1e-6
    w = np.array([[1.0, 0.0], [math.cos(eps), math.sin(eps)]])
    assert successive_angles(w)[0] == pytest.approx(math.degrees(eps), rel=1e-6)
    with pytest.raises(ValueError, match="zero vector"):
        successive_angles(np.zeros((2, 3)))


def test_swa_average_numpy_and_torch() -> None:
    w = np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    out = swa_average(w)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [2.0, 4.0])
    t = swa_average(torch.tensor(w))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([2.0, 4.0]))


def test_accepts_torch_tensors() -> None:
    probs = torch.softmax(torch.randn(3, 10, 4), dim=-1)
    y = torch.randint(0, 4, (10,))
    assert ensemble_accuracy(probs, y) == ensemble_accuracy(probs.numpy(), y.numpy())


def test_accuracy_difference_se_by_hand() -> None:
    y = np.zeros(4, dtype=int)
    a = np.array([0, 0, 0, 1])  # 3 right
    b = np.array([0, 0, 1, 1])  # 2 right; they differ on one sample
    d = np.array([0.0, 0.0, 1.0, 0.0])
    assert accuracy_difference_se(a, b, y) == pytest.approx(d.std(ddof=1) / 2.0)
    assert accuracy_difference_se(a, a, y) == 0.0


def test_analysis_module_never_imports_torch() -> None:
    tree = ast.parse(Path(ens_module.__file__).read_text())
    imported = [
        name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    ]
    assert not any(name.split(".")[0] == "torch" for name in imported)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def smoke_data():  # type: ignore[no-untyped-def]
    return load_dataset(DataConfig(n_train=512, n_test=256))


def _mlp(batchnorm: bool = False) -> nn.Module:
    return build_model(ModelConfig(name="mlp", width=16, batchnorm=batchnorm), (40,), 10)


def test_snapshots_are_taken_at_cycle_ends(smoke_data) -> None:  # type: ignore[no-untyped-def]
    model = _mlp()
    streamed: list[tuple[int, int]] = []
    run = cyclic_snapshots(
        model,
        smoke_data,
        lr_max=[0.05, 0.2],
        cycles=3,
        cycle_epochs=1.5,
        batch_size=64,
        on_snapshot=lambda i, step, params: streamed.append((i, step)),
    )
    assert run.snapshots is not None
    assert run.snapshots.shape == (2, 3, ParamSpace(model).dim)
    # The snapshot steps are exactly where the cyclic schedule ends its cycles (lowest LR).
    sched = make_schedule(
        ScheduleConfig(kind="cyclic", cycle_epochs=1.5, min_factor=0.01),
        run.steps_per_epoch,
        epochs=10,
    )
    assert run.snapshot_steps == sched.cycle_ends()[:3]
    assert streamed == [(i, s) for i, s in enumerate(run.snapshot_steps)]
    assert sched(run.snapshot_steps[0] - 1) == pytest.approx(0.01)
    # The snapshots differ from each other and from the shared start.
    for k in range(2):
        points = torch.cat([run.start[None], run.snapshots[k]])
        assert torch.cdist(points, points).fill_diagonal_(1.0).min() > 1e-4
    # The template module is left untouched.
    torch.testing.assert_close(ParamSpace(model).flatten(), run.start)


def test_each_member_uses_its_own_lr(smoke_data) -> None:  # type: ignore[no-untyped-def]
    kw = {"cycles": 2, "cycle_epochs": 1, "batch_size": 64, "seed": 3}
    pair = cyclic_snapshots(_mlp(), smoke_data, lr_max=[0.1, 1e-4], **kw)
    alone = cyclic_snapshots(_mlp(), smoke_data, lr_max=[0.1], **kw)
    assert pair.snapshots is not None and alone.snapshots is not None
    # Member 0 trains exactly as it would alone at LR 0.1 ...
    torch.testing.assert_close(pair.snapshots[0], alone.snapshots[0], atol=1e-5, rtol=1e-5)
    # ... while member 1, at a 1000x smaller LR, barely leaves the start.
    moved = (pair.snapshots[:, -1] - pair.start).norm(dim=1)
    assert moved[1] < moved[0] / 100


def test_warmup_trains_the_start_and_keep_false(smoke_data) -> None:  # type: ignore[no-untyped-def]
    model = _mlp()
    run = cyclic_snapshots(
        model, smoke_data, lr_max=[0.1], cycles=2, warmup_epochs=2, batch_size=64, keep=False
    )
    assert run.snapshots is None and len(run.snapshot_steps) == 2
    assert run.warmup_history is not None
    assert not torch.equal(run.start, ParamSpace(model).flatten())


def test_recompute_bn_matches_batch_statistics() -> None:
    x, _ = blobs(n=40, inputs=6)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    space = ParamSpace(model)
    thetas = torch.stack([space.flatten(), space.flatten() * 2])
    model.train()
    bufs = recompute_bn(space, thetas, x, batch_size=20)  # equal batches: mean of means
    for i in range(2):
        h = x @ space.unflatten(thetas[i])["0.weight"].T + space.unflatten(thetas[i])["0.bias"]
        torch.testing.assert_close(bufs["1.running_mean"][i], h.mean(0), atol=1e-5, rtol=1e-5)
    assert bufs["1.running_var"].shape == (2, 5)
    assert model.training and model[1].momentum == 0.1  # flags and momenta are restored
    # Without normalisation layers the module's buffers come back unchanged.
    assert recompute_bn(ParamSpace(nn.Linear(6, 3)), torch.zeros(2, 21), x) == {}


def test_measure_snapshots_with_batchnorm(smoke_data) -> None:  # type: ignore[no-untyped-def]
    model = _mlp(batchnorm=True)
    space = ParamSpace(model)
    run = cyclic_snapshots(model, smoke_data, lr_max=[0.1], cycles=3, batch_size=64)
    assert run.snapshots is not None
    x, y = smoke_data.split("test")
    out = measure_snapshots(
        space, run.snapshots[0], x, y, bn_x=smoke_data.x_train, origin=run.start
    )
    assert out["snapshot_acc"].shape == (3,) and out["successive_angle"].shape == (2,)
    assert all(np.all(np.isfinite(v)) for v in out.values())
    assert out["running_ensemble_acc"][-1] == out["ensemble_acc"]


# --------------------------------------------------------------------------- experiment


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        EnsembleConfig(lr_max=[0.1, 0.05])
    with pytest.raises(ValidationError):
        EnsembleConfig(independent_members=1)
    with pytest.raises(ValidationError):
        EnsembleConfig(cycles=5, unknown=1)  # type: ignore[call-arg]
    assert _presets.smoke().wedges.ensemble.cycles >= 2


def _replicate(smoke_data, replicate: int, **changes):  # type: ignore[no-untyped-def]
    cfg = _presets.smoke().wedges.ensemble.model_copy(update=changes)
    model = _mlp()
    start = initial_points(ParamSpace(model), 1, seed=5, member_ids=[replicate])[0]
    return ensemble_experiment(model, smoke_data, cfg, seed=replicate, start_params=start)


@pytest.fixture(scope="module")
def smoke_results(smoke_data) -> list[EnsembleResult]:  # type: ignore[no-untyped-def]
    return [_replicate(smoke_data, r) for r in range(2)]


def test_experiment_end_to_end(smoke_results: list[EnsembleResult]) -> None:
    a, cfg = smoke_results[0].arrays, _presets.smoke().wedges.ensemble
    lrs, s = len(cfg.lr_max), cfg.cycles
    assert a["snapshot_acc"].shape == (lrs, s)
    assert a["running_ensemble_acc"].shape == (lrs, s)
    assert a["successive_angle"].shape == (lrs, s - 1)
    assert a["angle_matrix"].shape == (lrs, s, s)
    assert a["start_train_loss"].shape == a["final_train_loss"].shape == (lrs,)
    assert a["independent/snapshot_acc"].shape == (cfg.independent_members,)
    assert a["fge/snapshot_acc"].shape == (cfg.fge_cycles,)
    np.testing.assert_array_equal(a["running_ensemble_acc"][:, -1], a["ensemble_acc"])
    for key in ("ensemble_acc", "swa_acc", "single_acc_last", "angle_mean", "disagreement_mean"):
        assert np.all(np.isfinite(a[key])), key
    assert np.all(a["angle_mean"] > 0)

    claims = {c.id: c for c in ensemble_claims(smoke_results, seed=0)}
    assert set(claims) == {"wedge.ensemble_vs_swa", "wedge.ensemble_baselines"}
    for claim in claims.values():
        assert claim.criterion and claim.setup
        assert claim.verdict in {"holds", "fails", "inconclusive"}
        assert claim.evidence is not None and claim.evidence.replicates == 2
        assert claim.evidence.control is not None
        record = claim.to_json()  # JSON-ready
        assert record["measured"]["per_replicate"]
    parts = claims["wedge.ensemble_vs_swa"].to_json()["measured"]["parts"]
    assert set(parts) == {"swa_gap_falls", "ensemble_beats_single", "angle_rises"}

    figures = ensemble_figures(smoke_results[0])
    assert set(figures) == {
        "ensemble_accuracy.png",
        "ensemble_running.png",
        "ensemble_diversity.png",
    }
    assert all(png.startswith(PNG_MAGIC) for png in figures.values())


def test_experiment_is_deterministic(smoke_data, smoke_results: list[EnsembleResult]) -> None:  # type: ignore[no-untyped-def]
    again = _replicate(smoke_data, 0)
    assert set(again.arrays) == set(smoke_results[0].arrays)
    for key, value in smoke_results[0].arrays.items():
        np.testing.assert_array_equal(again.arrays[key], value, err_msg=key)


def test_a_diverged_lr_max_is_left_out_by_the_rule(smoke_data) -> None:  # type: ignore[no-untyped-def]
    changes = {"lr_max": [0.05, 1e6], "independent_members": 0, "fge_cycles": 0}
    results = [_replicate(smoke_data, r, **changes) for r in range(2)]
    a = results[0].arrays
    assert a["diverged"].tolist() == [False, True]
    assert np.isfinite(a["ensemble_acc"][0]) and np.isnan(a["ensemble_acc"][1])
    assert stable_lr_max(a).tolist() == [True, False]
    assert not any(k.startswith(("independent/", "fge/")) for k in a)
    claims = {c.id: c for c in ensemble_claims(results, seed=0)}
    # One stable LR_max leaves no trend to test, and the baselines were skipped.
    assert claims["wedge.ensemble_vs_swa"].verdict == "inconclusive"
    assert claims["wedge.ensemble_baselines"].verdict == "inconclusive"
    assert claims["wedge.ensemble_vs_swa"].to_json()["measured"]["stable"][0] == [True, False]


def test_plots_draw_given_arrays() -> None:
    lr = [0.01, 0.1]
    fig = plot_ensemble_accuracy(
        lr,
        ensemble=[0.7, 0.8],
        swa=[0.7, 0.6],
        single_last=[0.69, 0.7],
        single_mean=[0.68, 0.69],
        baselines={"independent runs ensemble": 0.82},
    )
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 5
    fig = plot_running_ensemble({"a": [0.5, 0.6, 0.7], "b": [0.4, 0.5]})
    assert len(fig.axes[0].lines) == 2
    fig = plot_ensemble_diversity(
        lr, angle=[1.0, 10.0], disagreement=[0.02, 0.2], baselines={"FGE": (3.0, 0.1)}
    )
    assert len(fig.axes) == 2 and len(fig.axes[1].lines) == 2
