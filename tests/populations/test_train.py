from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from torch import nn

from lossatlas.config import ModelConfig, ScheduleConfig, TrainConfig
from lossatlas.models import build_model
from lossatlas.optim import HyperParams
from lossatlas.params import ParamSpace
from lossatlas.populations.train import TrainPlan, fit_members, initial_points, train_population
from lossatlas.seeding import make_generator
from tests.conftest import blobs, tiny_mlp


def test_plan_from_config_carries_every_field() -> None:
    """Every plan field but the seed comes from the TrainConfig; overrides win."""
    train = TrainConfig(
        epochs=7,
        batch_size=33,
        optimizer="adamw",
        nesterov=True,
        beta2=0.95,
        schedule=ScheduleConfig(kind="cosine", min_factor=0.2),
        snapshot_every=3,
        snapshot_unit="step",
        eval_batch_size=99,
        compile=True,
    )
    plan = TrainPlan.from_config(train, seed=11)
    assert plan.seed == 11
    for f in fields(TrainPlan):
        if f.name != "seed":
            assert getattr(plan, f.name) == getattr(train, f.name), f.name
            # Not the defaults: each field really is read from the config.
            assert getattr(plan, f.name) != getattr(TrainPlan(epochs=0), f.name), f.name
    changed = TrainPlan.from_config(train, seed=11, epochs=2, snapshot_every=0)
    assert (changed.epochs, changed.snapshot_every, changed.batch_size) == (2, 0, 33)


def test_population_shapes_and_history() -> None:
    x, y = blobs(96)
    pop = train_population(tiny_mlp(), (x, y), members=3, epochs=2, batch_size=32, lr=0.1)
    assert pop.params.shape == (3, ParamSpace(tiny_mlp()).dim)
    assert pop.history["train_loss"].shape == (3, 3)
    assert not pop.diverged.any()
    # Training lowers the loss of every member.
    assert (pop.history["train_loss"][:, -1] < pop.history["train_loss"][:, 0]).all()
    # Independent starts differ.
    assert not torch.allclose(pop.init[0], pop.init[1])


ENGINES = ["vmap", "stacked"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["mlp", "cnn1d"])
def test_member_in_population_matches_member_trained_alone(engine: str, kind: str) -> None:
    x, y = blobs(80, dtype=torch.float64)
    if kind == "cnn1d":
        x = torch.cat([x, x.flip(1)], dim=1)  # 10 positions for the convolutions
        model = build_model(ModelConfig(name="cnn1d", width=4, depth=2), (10,), 3, seed=0)
        model = model.double()
    else:
        model = tiny_mlp().double()
    space = ParamSpace(model)
    plan = TrainPlan(
        epochs=3, batch_size=16, seed=7, schedule=ScheduleConfig(kind="cosine", min_factor=0.1)
    )
    init = initial_points(space, 3, seed=7)
    lrs = [0.05, 0.1, 0.2]
    together = fit_members(
        space,
        init,
        x,
        y,
        plan=plan,
        hp=HyperParams.build(init, lr=lrs, weight_decay=1e-3),
        member_ids=torch.arange(3),
        eval_splits={"train": (x, y)},
        engine=engine,
    )
    alone = fit_members(
        space,
        init[1:2],
        x,
        y,
        plan=plan,
        hp=HyperParams.build(init[1:2], lr=lrs[1], weight_decay=1e-3),
        member_ids=torch.tensor([1]),
        eval_splits={"train": (x, y)},
        engine=engine,
    )
    torch.testing.assert_close(together.params[1], alone.params[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["mlp", "cnn1d"])
def test_population_matches_a_plain_pytorch_loop(engine: str, kind: str) -> None:
    """Each engine with functional SGD equals nn.Module + torch.optim with the same data order."""
    x, y = blobs(70, dtype=torch.float64)
    if kind == "cnn1d":
        x = torch.cat([x, x.flip(1)], dim=1)
        model = build_model(ModelConfig(name="cnn1d", width=4, depth=2), (10,), 3, seed=0)
        model = model.double()
    else:
        model = tiny_mlp().double()
    pop = train_population(
        model,
        (x, y),
        members=2,
        epochs=2,
        batch_size=16,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-3,
        seed=3,
        engine=engine,
    )
    space = ParamSpace(model)
    for k in range(2):
        space.load(pop.init[k])
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        for epoch in range(2):
            order = torch.randperm(70, generator=make_generator(3, "order", k, epoch))
            for start in range(0, 70, 16):
                idx = order[start : start + 16]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        torch.testing.assert_close(pop.params[k], space.flatten(), rtol=1e-9, atol=1e-11)


def test_diverging_member_is_marked_and_others_continue() -> None:
    x, y = blobs(64)
    relu_mlp = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    pop = train_population(
        relu_mlp, (x, y), members=3, epochs=3, batch_size=16, lr=[0.05, 1e30, 0.05], momentum=0.0
    )
    assert pop.diverged.tolist() == [False, True, False]
    assert torch.isnan(pop.history["train_loss"][1, -1])
    assert torch.isfinite(pop.history["train_loss"][[0, 2]]).all()
    assert torch.isfinite(pop.params[[0, 2]]).all()


def test_shared_start_and_snapshots() -> None:
    x, y = blobs(64)
    model = tiny_mlp()
    pop = train_population(
        model, (x, y), members=2, epochs=4, batch_size=16, start="shared", snapshot_every=2
    )
    torch.testing.assert_close(pop.init[0], pop.init[1])
    torch.testing.assert_close(pop.init[0], ParamSpace(model).flatten())
    assert pop.snapshots is not None
    assert pop.snapshots.shape == (2, 3, pop.params.shape[1])  # epochs 0, 2, 4
    torch.testing.assert_close(pop.snapshots[:, 0], pop.init)
    torch.testing.assert_close(pop.snapshots[:, -1], pop.params)
    # Different data orders take the shared start to different places.
    assert not torch.allclose(pop.params[0], pop.params[1])


def test_streamed_step_snapshots() -> None:
    x, y = blobs(64)
    seen: list[tuple[int, int]] = []
    train_population(
        tiny_mlp(),
        (x, y),
        members=2,
        epochs=2,
        batch_size=16,
        snapshot_every=3,
        snapshot_unit="step",
        on_snapshot=lambda i, step, p: seen.append((i, step)),
    )
    assert seen == [(0, 0), (1, 3), (2, 6)]


def test_batchnorm_buffers_are_per_member_and_adam_trains() -> None:
    x, y = blobs(64)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    pop = train_population(
        model, (x, y), members=2, epochs=2, batch_size=16, optimizer="adam", lr=1e-2
    )
    mean = pop.buffers["1.running_mean"]
    assert mean.shape == (2, 8)
    assert not torch.allclose(mean[0], mean[1])
    assert int(pop.buffers["1.num_batches_tracked"][0]) == 8
    assert (pop.history["train_loss"][:, -1] < pop.history["train_loss"][:, 0]).all()


def test_same_seed_same_numbers() -> None:
    x, y = blobs(64)
    a = train_population(tiny_mlp(), (x, y), members=2, epochs=2, seed=5)
    b = train_population(tiny_mlp(), (x, y), members=2, epochs=2, seed=5)
    assert torch.equal(a.params, b.params)


def test_grad_transform_keeps_members_in_a_subspace() -> None:
    """Projecting out a direction u keeps every member's displacement orthogonal to u."""
    x, y = blobs(64, dtype=torch.float64)
    model = tiny_mlp().double()
    space = ParamSpace(model)
    init = initial_points(space, 2, seed=1)
    u = torch.nn.functional.normalize(torch.randn(space.dim, dtype=torch.float64), dim=0)
    pop = fit_members(
        space,
        init,
        x,
        y,
        plan=TrainPlan(epochs=2, batch_size=16),
        hp=HyperParams.build(init, lr=0.1),
        member_ids=torch.arange(2),
        eval_splits={"train": (x, y)},
        grad_transform=lambda g: g - (g @ u).unsqueeze(1) * u,
    )
    moved = pop.params - init
    assert moved.norm() > 1e-3
    torch.testing.assert_close(moved @ u, torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_engines_agree_and_auto_picks_stacked_only_where_it_traces() -> None:
    x, y = blobs(64, dtype=torch.float64)
    model = tiny_mlp().double()
    runs = {
        e: train_population(model, (x, y), members=2, epochs=2, batch_size=16, engine=e)
        for e in ("auto", "stacked", "vmap")
    }
    assert torch.equal(runs["auto"].params, runs["stacked"].params)
    torch.testing.assert_close(runs["stacked"].params, runs["vmap"].params, rtol=1e-10, atol=1e-12)
    batchnorm = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    train_population(batchnorm, blobs(32), members=2, epochs=1, batch_size=16, engine="auto")
    with pytest.raises(ValueError, match="engine 'stacked' cannot run this model"):
        train_population(batchnorm, blobs(32), members=2, epochs=1, engine="stacked")
    with pytest.raises(ValueError, match="unknown engine"):
        train_population(model, (x, y), members=2, epochs=1, engine="jit")  # type: ignore[arg-type]


def test_default_engine_does_not_depend_on_the_thread_count() -> None:
    """Ray workers run one thread each: the default engine must give the driver's numbers.

    On the stacked engine each share of the members trains and evaluates on a thread of its
    own; 5 members on 1, 2 and 3 threads are shared out 5, 2 + 3 and 2 + 1 + 2. Member 3's
    learning rate makes it diverge, and it must be frozen the same way whatever its share.
    """
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 40, generator=gen), torch.randint(0, 10, (512,), generator=gen)
    model = nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 10))
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            pop = train_population(
                model,
                (x, y),
                members=5,
                epochs=2,
                batch_size=64,
                seed=0,
                lr=[0.05, 0.05, 0.05, 1e6, 0.05],
            )
            runs.append(pop)
    finally:
        torch.set_num_threads(before)
    assert runs[0].diverged.tolist() == [False, False, False, True, False]
    for run in runs[1:]:
        assert torch.equal(run.params, runs[0].params)
        assert torch.equal(run.diverged, runs[0].diverged)
        for name, values in runs[0].history.items():
            torch.testing.assert_close(run.history[name], values, rtol=0, atol=0, equal_nan=True)
