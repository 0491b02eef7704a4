"""Jump and retrain (PAPERS B1): directions, rays, shared data orders, alignment, BN, store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from pydantic import ValidationError
from torch import nn

from lossatlas.batchnorm import recompute_bn
from lossatlas.config import DataConfig, ModelConfig
from lossatlas.data import Dataset, load_dataset
from lossatlas.errors import StoreError
from lossatlas.evaluate import evaluate_points
from lossatlas.execute import LocalExecutor, Unit
from lossatlas.models import build_model
from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png
from lossatlas.plots.jump import (
    jump_figures,
    plot_jump_accuracy,
    plot_jump_distance,
    plot_jump_loss,
)
from lossatlas.populations.jump import (
    JumpOptions,
    jump_and_retrain,
    jump_directions,
    jump_stage_arrays,
    jump_starts,
)
from lossatlas.stages.jumps import run_jumps_to_store
from lossatlas.store import AtlasStore
from tests.conftest import blobs


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # The machine is shared; tiny models gain nothing from more threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mnist1d() -> Dataset:
    return load_dataset(DataConfig(n_train=512, n_test=256))


def bn_model() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def small_mlp() -> nn.Module:
    return build_model(ModelConfig(name="mlp", width=16, depth=1), (40,), 10, seed=3)


def opts(**kw: Any) -> JumpOptions:
    base: dict[str, Any] = {
        "sizes": [0.5, 1.0],
        "seeds": [0, 1],
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.05,
        "jumps_per_unit": 2,
    }
    return JumpOptions(**{**base, **kw})


# --------------------------------------------------------------------------- directions


def test_directions_are_filter_normalised_and_fixed_by_the_seed() -> None:
    model = bn_model()
    space = ParamSpace(model)
    center = space.flatten()
    dirs = jump_directions(space, center, [0, 1, 0], base_seed=5)
    assert dirs.shape == (3, space.dim)
    for slot in space.slots:
        d = dirs[:, slot.start : slot.stop]
        if len(slot.shape) <= 1:  # biases and BatchNorm weight/bias: no jump
            assert torch.count_nonzero(d) == 0, slot.name
            continue
        w = center[slot.start : slot.stop].reshape(slot.shape[0], -1)
        for row in d:
            filt = row.reshape(slot.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(filt, w.norm(dim=1), rtol=1e-5, atol=1e-7)
    assert torch.equal(dirs[0], dirs[2])  # same seed, same direction
    assert not torch.allclose(dirs[0], dirs[1])
    assert torch.equal(jump_directions(space, center, [1], base_seed=5)[0], dirs[1])
    assert not torch.allclose(jump_directions(space, center, [0], base_seed=6)[0], dirs[0])
    # BatchNorm running statistics are not touched by drawing directions.
    assert torch.equal(model[1].running_var, torch.ones(8))


def test_starts_are_seed_major_rays() -> None:
    center = torch.randn(6, dtype=torch.float64)
    dirs = torch.randn(3, 6, dtype=torch.float64)
    sizes = [0.25, 0.5, 1.0]
    starts, size_of, seed_of = jump_starts(center, dirs, sizes, seeds=[7, 8, 9])
    assert starts.shape == (9, 6)
    assert seed_of.tolist() == [7, 7, 7, 8, 8, 8, 9, 9, 9]
    assert size_of.tolist() == sizes * 3
    for m in range(9):
        torch.testing.assert_close(starts[m] - center, size_of[m] * dirs[m // 3])


def test_jumps_of_a_seed_lie_on_one_ray_and_snapshot_zero_is_the_jump() -> None:
    x, y = blobs(64)
    model = bn_model()
    space = ParamSpace(model)
    center = space.flatten()
    options = opts(sizes=[0.25, 0.5, 0.75, 1.0], seeds=[0, 1], epochs=1)
    run = jump_and_retrain(model, (x, y), center, options=options, base_seed=2)
    assert run.seed.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert run.member.tolist() == list(range(8))
    moves = run.starts - center
    for i in range(2):
        ray = moves[4 * i : 4 * i + 4]
        unit = ray[-1]  # size 1.0: the direction itself
        for j, size in enumerate(options.sizes):
            torch.testing.assert_close(ray[j], size * unit, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(moves[0], moves[4])  # two different rays
    assert run.snapshots is not None
    assert torch.equal(run.snapshots[:, 0], run.starts)
    torch.testing.assert_close(run.distance[:, 0], moves.double().norm(dim=1), rtol=1e-6, atol=1e-6)
    # The distances along a ray grow in proportion to the size.
    ratios = run.distance[:4, 0] / run.distance[3, 0]
    torch.testing.assert_close(ratios, torch.tensor(options.sizes, dtype=torch.float64))


# --------------------------------------------------------------------------- data order


def test_the_seed_fixes_the_data_order() -> None:
    x, y = blobs(96)
    model = bn_model()
    # Size 0 jumps all start at the centre, so only the data order can tell them apart.
    options = opts(sizes=[0.0, 0.0, 0.5], seeds=[0, 1], epochs=2, batch_size=16)
    run = jump_and_retrain(model, (x, y), options=options)
    snaps = run.snapshots
    assert snaps is not None
    # Same seed, same size: the same retraining, up to float rounding (vmapped kernels may
    # round two batch slices differently in the last bit).
    torch.testing.assert_close(snaps[0], snaps[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(snaps[3], snaps[4], rtol=1e-6, atol=1e-6)
    # Another seed: another order, visibly apart.
    assert (snaps[0, -1] - snaps[3, -1]).abs().max() > 1e-2
    # A member's numbers do not depend on the other members of its population.
    alone = jump_and_retrain(model, (x, y), options=options, members=[5])
    assert alone.snapshots is not None
    torch.testing.assert_close(alone.snapshots[0], snaps[5], rtol=1e-6, atol=1e-7)
    # Determinism: the same call gives the same numbers.
    again = jump_and_retrain(model, (x, y), options=options)
    assert again.snapshots is not None
    assert torch.equal(again.snapshots, snaps)
    for name, values in run.history.items():
        assert torch.equal(values, again.history[name]), name


# --------------------------------------------------------------------------- alignment


def test_metrics_are_aligned_with_their_samples(mnist1d: Dataset) -> None:
    model = small_mlp()
    space = ParamSpace(model)
    run = jump_and_retrain(model, mnist1d, options=opts(epochs=3, lr=0.1), base_seed=1)
    arrays = jump_stage_arrays(run)
    m, t = run.members, run.snapshot_count
    assert t == 4 and arrays["samples"].shape == (m * t, space.dim)
    assert arrays["sample"].tolist() == list(range(m * t))
    assert arrays["member"].tolist() == np.repeat(np.arange(m), t).tolist()
    assert arrays["epoch"].tolist() == [0.0, 1.0, 2.0, 3.0] * m
    assert {"train_loss", "val_acc", "test_loss", "test_acc", "distance"} <= set(arrays)
    # Recompute the test loss at every stored sample, independently, from the stored point.
    points = torch.as_tensor(arrays["samples"])
    loss, acc = evaluate_points(space, points, *mnist1d.split("test"))
    np.testing.assert_allclose(arrays["test_loss"], loss.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["test_acc"], acc.numpy(), atol=1e-6)
    # The guard is sharp: a one-sample shift would be visibly wrong.
    assert np.abs(arrays["test_loss"][1:] - loss.numpy()[:-1]).max() > 1e-2
    # The same in the (M, T) history.
    np.testing.assert_allclose(
        run.history["test_loss"].numpy(), loss.reshape(m, t).numpy(), rtol=1e-5, atol=1e-6
    )


def test_step_snapshots_are_aligned_too() -> None:
    x, y = blobs(64)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    space = ParamSpace(model)
    options = opts(epochs=2, batch_size=16, snapshot_unit="step", snapshot_every=3)
    run = jump_and_retrain(model, (x, y), options=options)
    assert run.snapshot_steps == [0, 3, 6]  # 4 steps per epoch, 8 in all
    assert run.epoch.tolist() == [0.0, 0.75, 1.5]
    assert run.snapshots is not None
    loss, _ = evaluate_points(space, run.snapshots.reshape(-1, space.dim), x, y)
    torch.testing.assert_close(run.history["train_loss"].reshape(-1), loss)
    with pytest.raises(ValueError, match="without buffers"):
        jump_and_retrain(bn_model(), (x, y), options=options)


# --------------------------------------------------------------------------- BatchNorm


def test_bn_policy_keep_vs_recompute() -> None:
    x, y = blobs(64)
    model = bn_model()
    space = ParamSpace(model)
    center = space.flatten()
    # An optimum whose running statistics are clearly not those of any jump point.
    buffers = space.buffers()
    buffers["1.running_mean"] = torch.full((8,), 0.7)
    buffers["1.running_var"] = torch.full((8,), 2.5)
    module_before = space.buffers()
    runs = {
        policy: jump_and_retrain(
            model, (x, y), center, options=opts(bn_policy=policy, epochs=1), buffers=buffers
        )
        for policy in ("keep", "recompute")
    }
    keep, fresh = runs["keep"], runs["recompute"]
    assert torch.equal(keep.starts, fresh.starts)
    m = keep.members
    for name, value in buffers.items():  # keep: the optimum's statistics at every jump point
        assert torch.equal(keep.start_buffers[name], value.expand(m, *value.shape)), name
    expected = recompute_bn(space, fresh.starts, x, batch_size=1024)
    for name in ("1.running_mean", "1.running_var"):
        torch.testing.assert_close(fresh.start_buffers[name], expected[name])
        assert not torch.allclose(fresh.start_buffers[name], keep.start_buffers[name])
    # Snapshot 0 is evaluated with the policy's statistics.
    for run in (keep, fresh):
        loss, _ = evaluate_points(
            space, run.starts, x, y, buffers=run.start_buffers, buffers_batched=True
        )
        torch.testing.assert_close(run.history["train_loss"][:, 0], loss)
    assert not torch.allclose(keep.history["train_loss"][:, 0], fresh.history["train_loss"][:, 0])
    # Retraining then updates the statistics as training does.
    assert not torch.allclose(keep.buffers["1.running_mean"], keep.start_buffers["1.running_mean"])
    for name, value in space.buffers().items():  # the user's module is left as it was
        assert torch.equal(value, module_before[name]), name


# --------------------------------------------------------------------------- store


class _KilledAfterFirst:
    """An executor that runs one unit and then dies, like a killed job."""

    def map(self, units: Sequence[Unit], *, description: str = "") -> list[Any]:
        units[0]()
        raise RuntimeError("killed")


def test_store_runner_streams_resumes_and_matches_memory(tmp_path: Path) -> None:
    x, y = blobs(96)
    model = bn_model()
    center = ParamSpace(model).flatten()
    options = opts(epochs=2, batch_size=32, jumps_per_unit=2)
    store = AtlasStore.open(tmp_path, config={"test": "jump"})
    args = (store, "jump", model, (x, y), center, options)
    with pytest.raises(RuntimeError, match="killed"):
        run_jumps_to_store(*args, base_seed=4, executor=_KilledAfterFirst())
    assert store.completed_units("jump") == ["jumps-0000-0001"]
    # Tamper with the finished unit's rows: a resume must not recompute (rewrite) them.
    t = 3
    saved_row = store.read("jump/samples", (0,))
    store.write("jump/samples", (0,), np.full_like(saved_row, 7.0))
    summary = run_jumps_to_store(*args, base_seed=4, executor=LocalExecutor(progress=False))
    assert summary.ran_units == ["jumps-0002-0003"] and summary.skipped_units == 1
    assert (summary.members, summary.snapshots) == (4, t)
    assert np.all(store.read("jump/samples", (0,)) == 7.0)
    store.write("jump/samples", (0,), saved_row)

    memory = jump_and_retrain(model, (x, y), center, options=options, base_seed=4)
    expected = jump_stage_arrays(memory)
    d = ParamSpace(model).dim
    assert store.array("jump/samples").shape == (4 * t, d)
    assert store.array("jump/samples").chunks == (1, d)
    np.testing.assert_allclose(store.read("jump/samples"), expected["samples"], atol=1e-6)
    for name in ("member", "size", "seed", "epoch", "step"):
        np.testing.assert_array_equal(store.read(f"jump/meta/{name}"), expected[name])
    for name in ("train_loss", "train_acc", "distance"):
        np.testing.assert_allclose(
            store.read(f"jump/metrics/{name}"), expected[name], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(store.read("jump/final"), memory.final.numpy(), atol=1e-6)
    assert not store.read("jump/diverged").any()
    # Complete: nothing reruns; another base seed is refused before anything is written.
    assert run_jumps_to_store(*args, base_seed=4).ran_units == []
    with pytest.raises(StoreError):
        run_jumps_to_store(*args, base_seed=5)


# --------------------------------------------------------------------------- options, plots


def test_options_validate() -> None:
    assert JumpOptions().members == 16
    assert JumpOptions().snapshot_count(29) == 41
    with pytest.raises(ValidationError):
        JumpOptions(sizes=[-0.5])
    with pytest.raises(ValidationError):
        JumpOptions(bn_policy="reset")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        JumpOptions(seeds=[])
    with pytest.raises(ValueError, match="subset"):
        jump_and_retrain(bn_model(), blobs(32), options=opts(), members=[4])


def test_plots_draw_one_line_per_jump() -> None:
    x, y = blobs(64)
    run = jump_and_retrain(bn_model(), (x, y), options=opts(epochs=1))
    figures = jump_figures(run, title="smoke")
    assert set(figures) == {"jump_loss", "jump_distance", "jump_accuracy"}
    for fig in figures.values():
        assert isinstance(fig, Figure)
        assert all(len(ax.lines) == run.members for ax in fig.axes)
        assert figure_to_png(fig).startswith(b"\x89PNG")
    epoch, size = np.arange(3.0), np.array([0.5, 1.0])
    curves = {"train": np.ones((2, 3)), "test": np.ones((2, 3))}
    fig = plot_jump_loss(epoch, curves, size, logy=True)
    labels = [line.get_label() for line in fig.axes[-1].lines]
    assert labels == ["size 0.5", "size 1"]
    figure_to_png(fig)
    figure_to_png(plot_jump_accuracy(epoch, curves, size))
    with pytest.raises(ValueError, match="expected values"):
        plot_jump_distance(epoch, np.ones((3, 3)), size)
