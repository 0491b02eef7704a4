"""Batched evaluation equals a naive per-point loop, for every strategy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossatlas.evaluate import evaluate_points, predict_points
from lossatlas.params import ParamSpace
from tests.conftest import blobs, tiny_mlp


def naive(model: nn.Module, thetas: torch.Tensor, x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
    space = ParamSpace(model)
    losses, accs, logits = [], [], []
    model.eval()
    with torch.no_grad():
        for theta in thetas:
            space.load(theta)
            out = model(x)
            logits.append(out)
            losses.append(nn.functional.cross_entropy(out, y))
            accs.append((out.argmax(1) == y).double().mean())
    return torch.stack(losses), torch.stack(accs), torch.stack(logits)


@pytest.mark.parametrize("strategy", ["vmap", "loop", "auto"])
@pytest.mark.parametrize("sample_chunk", [7, 64])
def test_batched_equals_naive_loop(strategy: str, sample_chunk: int) -> None:
    x, y = blobs(50, dtype=torch.float64)
    model = tiny_mlp().double()
    thetas = torch.randn(5, ParamSpace(model).dim, dtype=torch.float64)
    loss, acc = evaluate_points(
        ParamSpace(model), thetas, x, y, sample_chunk=sample_chunk, point_chunk=2, strategy=strategy
    )
    logits = predict_points(
        ParamSpace(model), thetas, x, sample_chunk=sample_chunk, strategy=strategy
    )
    ref_loss, ref_acc, ref_logits = naive(model, thetas, x, y)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc, ref_acc)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_per_point_buffers(strategy: str) -> None:
    x, y = blobs(40, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    space = ParamSpace(model)
    thetas = torch.randn(3, space.dim, dtype=torch.float64)
    buffers = {n: b.unsqueeze(0).repeat(3, *[1] * b.dim()) for n, b in space.buffers().items()}
    buffers["1.running_mean"] = torch.randn(3, 6, dtype=torch.float64)
    loss, _ = evaluate_points(
        space, thetas, x, y, buffers=buffers, buffers_batched=True, strategy=strategy
    )
    for k in range(3):
        space.load(thetas[k], {n: b[k] for n, b in buffers.items()})
        model.eval()
        with torch.no_grad():
            expected = nn.functional.cross_entropy(model(x), y)
        torch.testing.assert_close(loss[k], expected, rtol=1e-12, atol=1e-12)
    assert model.training is False  # we set it; evaluate_points restores what it found
