from __future__ import annotations

import pytest
import torch

from lossatlas.config import ScheduleConfig
from lossatlas.optim import HyperParams, make_optimizer, make_schedule


def quadratic_grad(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return a * p + 0.3 * p**3  # gradient of a separable non-quadratic bowl


@pytest.mark.parametrize(
    ("name", "torch_cls", "kwargs"),
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "weight_decay": 1e-2}),
        ("sgd", torch.optim.SGD, {"momentum": 0.8, "weight_decay": 0.0, "nesterov": True}),
        ("adam", torch.optim.Adam, {"weight_decay": 1e-2}),
        ("adamw", torch.optim.AdamW, {"weight_decay": 1e-1}),
    ],
)
def test_functional_optimizer_matches_torch_per_member(name, torch_cls, kwargs) -> None:
    dtype = torch.float64
    members, dim, steps = 3, 6, 12
    start = torch.randn(members, dim, dtype=dtype)
    a = torch.rand(dim, dtype=dtype) + 0.5
    lrs = [0.01, 0.03, 0.05]
    nesterov = kwargs.pop("nesterov", False)
    opt = make_optimizer(name, nesterov=nesterov)
    params = start.clone()
    beta = kwargs.get("momentum", 0.9)
    hp = HyperParams.build(params, lr=lrs, weight_decay=kwargs["weight_decay"], momentum=beta)
    state = opt.init_state(params)
    active = torch.ones(members, 1, dtype=torch.bool)
    for _ in range(steps):
        opt.step(params, quadratic_grad(params, a), state, hp, 1.0, active)
    for k in range(members):
        p = start[k].clone().requires_grad_()
        extra = {"nesterov": nesterov} if name == "sgd" else {}
        reference = torch_cls([p], lr=lrs[k], **kwargs, **extra)
        for _ in range(steps):
            reference.zero_grad()
            p.grad = quadratic_grad(p.detach(), a)
            reference.step()
        torch.testing.assert_close(params[k], p.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_inactive_members_never_move_even_with_nan_gradients(name) -> None:
    opt = make_optimizer(name)
    params = torch.randn(2, 4)
    before = params.clone()
    hp = HyperParams.build(params, lr=0.1, weight_decay=0.1)
    state = opt.init_state(params)
    grads = torch.randn(2, 4)
    grads[1] = float("nan")
    active = torch.tensor([[True], [False]])
    opt.step(params, grads, state, hp, 1.0, active)
    assert torch.equal(params[1], before[1])
    assert not torch.equal(params[0], before[0])
    assert torch.isfinite(params).all()


def test_per_member_hyperparameters_validate_length() -> None:
    with pytest.raises(ValueError, match="3 values for 2 members"):
        HyperParams.build(torch.zeros(2, 3), lr=[0.1, 0.2, 0.3])


def test_schedules() -> None:
    constant = make_schedule(ScheduleConfig(), steps_per_epoch=10, epochs=5)
    assert constant(0) == constant(49) == 1.0
    step = make_schedule(ScheduleConfig(kind="step", milestones=[2, 4], gamma=0.1), 10, 5)
    assert step(19) == 1.0
    assert step(20) == pytest.approx(0.1)
    assert step(45) == pytest.approx(0.01)
    cosine = make_schedule(ScheduleConfig(kind="cosine", min_factor=0.1), 10, 5)
    assert cosine(0) == pytest.approx(1.0)
    assert cosine(25) == pytest.approx(0.55)
    assert cosine(50) == pytest.approx(0.1)
    cyclic = make_schedule(ScheduleConfig(kind="cyclic", cycle_epochs=2, min_factor=0.0), 10, 6)
    assert cyclic.cycle_ends() == [20, 40, 60]
    assert cyclic(19) == pytest.approx(0.0)  # the last step of a cycle is at the minimum
    assert cyclic(20) == pytest.approx(cyclic(0))  # and the next cycle restarts high
    assert cyclic(0) > 0.99
