"""Population training through the batch interface the probes use (lossatlas.data.batches).

Dict batches, keyword-argument models, custom adapters and regression losses train in a
population; each is checked against the same population on ``(X, y)`` tensors or against a
plain PyTorch loop with the population's data order.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lossatlas import BatchAdapter, BatchError, LossAtlasError, ParamSpace
from lossatlas.populations import jump_and_retrain
from lossatlas.populations.jump import JumpOptions
from lossatlas.populations.train import train_population
from lossatlas.seeding import make_generator
from tests._user_models import DictRows, TinyText, text_data
from tests.conftest import blobs, tiny_mlp

KW = {"members": 2, "epochs": 2, "batch_size": 16, "lr": 0.1, "seed": 3}


def test_dict_batches_equal_the_same_population_on_tensors() -> None:
    x, y = blobs(48, dtype=torch.float64)
    model = tiny_mlp().double()  # nn.Sequential: forward(input), so {"input": x} calls it
    # Dict batches take the vmap engine: the same engine on tensors gives the same numbers.
    on_tensors = train_population(model, (x, y), engine="vmap", **KW)
    loader = DataLoader(DictRows(input=x, labels=y), batch_size=20)
    on_dicts = train_population(model, loader, **KW)
    assert torch.equal(on_dicts.params, on_tensors.params)
    for name, values in on_tensors.history.items():
        torch.testing.assert_close(on_dicts.history[name], values, rtol=0, atol=0)
    # A loader of (x, y) pairs is read as tensors: the default (stacked) engine, bit for bit.
    default = train_population(model, (x, y), **KW)
    pairs = train_population(model, DataLoader(torch.utils.data.TensorDataset(x, y), 20), **KW)
    assert torch.equal(pairs.params, default.params)
    # The two engines agree up to rounding.
    torch.testing.assert_close(default.params, on_tensors.params, rtol=1e-12, atol=1e-12)


def test_keyword_model_with_dict_outputs_matches_a_plain_loop() -> None:
    data = text_data()
    model = TinyText().double()
    loader = DataLoader(DictRows(**data), batch_size=16)
    pop = train_population(model, loader, momentum=0.0, **KW)
    assert not pop.diverged.any()
    assert (pop.history["train_loss"][:, -1] < pop.history["train_loss"][:, 0]).all()
    assert torch.isfinite(pop.history["train_acc"]).all()
    space = ParamSpace(model)
    n = data["labels"].shape[0]
    for k in range(2):
        space.load(pop.init[k])
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(2):
            order = torch.randperm(n, generator=make_generator(3, "order", k, epoch))
            for start in range(0, n, 16):
                idx = order[start : start + 16]
                opt.zero_grad()
                out = model(data["input_ids"][idx], data["attention_mask"][idx])
                F.cross_entropy(out["logits"], data["labels"][idx]).backward()
                opt.step()
        torch.testing.assert_close(pop.params[k], space.flatten(), rtol=1e-9, atol=1e-11)


def test_several_inputs_and_a_custom_loss_through_an_adapter() -> None:
    x, y = blobs(32, dtype=torch.float64)

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 3)

        def forward(self, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
            return self.a(u) + self.b(v), u

    def loss(outputs: tuple[Tensor, Tensor], batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(outputs[0], batch[2])

    adapter = BatchAdapter(
        inputs=lambda b: (b[0], b[1]),
        target=lambda b: b[2],
        logits=lambda out: out[0],
        loss=loss,
    )
    model = TwoInputs().double()
    pop = train_population(model, [(x, x.flip(1), y)], adapter=adapter, **KW)
    # The same model on (X, y) with the second input built inside: the same numbers.
    plain = nn.Module()
    plain.a, plain.b = model.a, model.b
    plain.forward = lambda u: model.a(u) + model.b(u.flip(1))  # type: ignore[method-assign]
    reference = train_population(plain, (x, y), **KW)
    torch.testing.assert_close(pop.params, reference.params, rtol=1e-12, atol=1e-14)
    assert torch.isfinite(pop.history["train_acc"]).all()


def test_regression_trains_with_no_accuracy() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=g)
    y = x @ torch.randn(4, 1, generator=g) + 0.1  # float targets (N, 1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    pop = train_population(model, (x, y), loss_fn=F.mse_loss, **KW)
    assert not pop.diverged.any()
    assert (pop.history["train_loss"][:, -1] < pop.history["train_loss"][:, 0]).all()
    assert torch.isnan(pop.history["train_acc"]).all()
    # accuracy=None on class labels: no accuracy either, the same losses.
    xc, yc = blobs(32)
    pop = train_population(tiny_mlp(), (xc, yc), adapter=BatchAdapter(accuracy=None), **KW)
    assert torch.isnan(pop.history["train_acc"]).all()
    ref = train_population(tiny_mlp(), (xc, yc), **KW)
    assert torch.equal(pop.history["train_loss"], ref.history["train_loss"])


def test_jump_and_retrain_reads_dict_batches() -> None:
    x, y = blobs(32, dtype=torch.float64)
    model = tiny_mlp().double()
    opts = JumpOptions(sizes=[0.5], seeds=[0, 1], epochs=1, batch_size=16, snapshot_every=1)
    on_tensors = jump_and_retrain(model, (x, y), options=opts)
    on_dicts = jump_and_retrain(model, [{"input": x, "labels": y}], options=opts)
    assert torch.equal(on_dicts.final, on_tensors.final)


def test_unreadable_batches_give_one_clear_line() -> None:
    x, y = blobs(16)
    with pytest.raises(BatchError) as info:
        train_population(tiny_mlp(), [(x, x, y)], **KW)
    message = str(info.value)
    assert isinstance(info.value, LossAtlasError)
    assert "\n" not in message and "expected (x, y)" in message
    with pytest.raises(BatchError, match="'labels' key"):
        train_population(tiny_mlp(), [{"input": x, "target": y}], **KW)
    with pytest.raises(BatchError, match="samples but y has"):
        train_population(tiny_mlp(), (x, y[:-1]), **KW)
    with pytest.raises(ValueError, match="engine 'stacked' cannot run this data"):
        train_population(tiny_mlp(), [{"input": x, "labels": y}], engine="stacked", **KW)
