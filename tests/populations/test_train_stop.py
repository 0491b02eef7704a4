"""fit_members(stop_when=...): converged members freeze, training ends when all have."""

from __future__ import annotations

import torch

from lossatlas.optim import HyperParams
from lossatlas.params import ParamSpace
from lossatlas.populations.train import TrainPlan, fit_members, initial_points
from tests.conftest import blobs, tiny_mlp


def _fit(epochs: int, stop_when=None):  # type: ignore[no-untyped-def]
    model = tiny_mlp().double()
    x, y = blobs(64, dtype=torch.float64)
    space = ParamSpace(model)
    init = initial_points(space, 3, seed=0)
    plan = TrainPlan(epochs=epochs, batch_size=16, seed=0)
    hp = HyperParams.build(init, lr=0.05, weight_decay=0.0, momentum=0.9)
    return fit_members(
        space,
        init,
        x,
        y,
        plan=plan,
        hp=hp,
        member_ids=torch.arange(3),
        eval_splits={"train": (x, y)},
        stop_when=stop_when,
    )


def test_a_member_that_stops_equals_one_trained_that_long() -> None:
    # Member 1 stops after epoch 2, the others after epoch 4: each equals a run of that length.
    def stop_when(epoch: int, metrics: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.tensor([epoch >= 4, epoch >= 2, epoch >= 4])

    stopped = _fit(10, stop_when)
    assert stopped.stopped_at.tolist() == [4, 2, 4]
    two, four = _fit(2), _fit(4)
    torch.testing.assert_close(stopped.params[1], two.params[1], rtol=0, atol=0)
    torch.testing.assert_close(stopped.params[[0, 2]], four.params[[0, 2]], rtol=0, atol=0)
    # Training ended after epoch 4 of 10: later columns were never measured.
    assert torch.isnan(stopped.history["train_loss"][:, 5:]).all()
    assert not stopped.diverged.any()


def test_without_stop_when_nothing_changes() -> None:
    plain = _fit(3)
    assert plain.stopped_at is None
    never = _fit(3, lambda epoch, metrics: torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(never.params, plain.params, rtol=0, atol=0)
    assert never.stopped_at.tolist() == [-1, -1, -1]
