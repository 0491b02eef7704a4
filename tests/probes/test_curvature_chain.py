"""The chain engine of dense_hessian (probes/curvature/_chain.py): hand-written products for
plain layer chains under the default cross-entropy.

Every case is checked in float64 against torch.autograd.functional.hessian (reverse over
reverse, an independent code path); models and losses it does not cover must fall back (or,
asked for explicitly, say why).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossatlas.config import ModelConfig
from lossatlas.models import build_model
from lossatlas.probes.curvature import _chain, dense_hessian
from tests.conftest import blobs
from tests.probes.test_curvature_head import autograd_hessian

Problem = tuple[nn.Module, torch.Tensor, torch.Tensor]


def _inputs(
    n: int, shape: tuple[int, ...], classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=generator)


def _cnn1d(activation: str) -> Problem:
    config = ModelConfig(name="cnn1d", width=3, activation=activation)
    model = build_model(config, (24,), 4, seed=0).double()
    return (model, *_inputs(30, (24,), 4))


def _conv_no_bias() -> Problem:
    # Two input channels, stride 1, no padding, a bias-free convolution and head.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 3, 3, bias=False),
        nn.ReLU(),
        nn.Conv1d(3, 2, 2, stride=2, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(2 * 4, 3, bias=False),
    ).double()
    return (model, *_inputs(25, (2, 8), 3))


def _mlp() -> Problem:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6, bias=False), nn.Tanh(), nn.Linear(6, 4)
    ).double()
    return (model, *blobs(40, classes=4, dtype=torch.float64))


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "cnn1d_relu": lambda: _cnn1d("relu"),
    "cnn1d_tanh": lambda: _cnn1d("tanh"),
    "conv_no_bias": _conv_no_bias,
    "mlp": _mlp,
}


@pytest.fixture
def chain_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the chain engine's sample chunks."""
    calls: list[int] = []
    real = _chain.ChainHessian.accumulate

    def counted(self: _chain.ChainHessian, *args: object) -> None:
        calls.append(1)
        real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_chain.ChainHessian, "accumulate", counted)
    return calls


@pytest.mark.parametrize("name", PROBLEMS)
def test_chain_engine_gives_the_exact_hessian(name: str, chain_calls: list[int]) -> None:
    model, x, y = PROBLEMS[name]()
    reference = autograd_hessian(model, x, y)
    hessian = dense_hessian(model, (x, y))  # auto: a plain chain takes the chain engine
    assert chain_calls == [1]
    torch.testing.assert_close(hessian, reference, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hessian, hessian.T, rtol=0, atol=0)
    # Sample chunks and column blocks of every size give the same matrix.
    for kwargs in ({"batch_size": 7}, {"block_size": 1}, {"block_size": 5, "batch_size": 11}):
        again = dense_hessian(model, (x, y), engine="chain", **kwargs)  # type: ignore[arg-type]
        torch.testing.assert_close(again, reference, rtol=1e-10, atol=1e-12)


def test_chain_engine_agrees_with_autodiff_in_float32() -> None:
    model = build_model(ModelConfig(name="cnn1d", width=4), (24,), 4, seed=1)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 24, generator=generator)
    y = torch.randint(0, 4, (64,), generator=generator)
    chain = dense_hessian(model, (x, y), engine="chain")
    autodiff = dense_hessian(model, (x, y), engine="autodiff")
    assert chain.dtype == torch.float32
    torch.testing.assert_close(chain, autodiff, rtol=1e-4, atol=1e-6)


class _Gelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 6), nn.GELU(), nn.Linear(6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _batchnorm() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).eval()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_batchnorm, "buffers"),
        (_Gelu, "activation gelu"),
        (lambda: nn.Sequential(nn.Linear(5, 6), nn.Sigmoid(), nn.Linear(6, 3)), "Sigmoid"),
    ],
    ids=["batchnorm", "gelu", "sigmoid"],
)
def test_models_outside_the_chain_fall_back_and_stay_exact(
    make: Callable[[], nn.Module], reason: str, chain_calls: list[int]
) -> None:
    torch.manual_seed(0)
    model = make().double()
    x, y = blobs(30, dtype=torch.float64)
    reference = autograd_hessian(model, x, y)
    torch.testing.assert_close(dense_hessian(model, (x, y)), reference, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=f"engine='chain' cannot.*{reason}"):
        dense_hessian(model, (x, y), engine="chain")
    assert not chain_calls


def test_other_losses_and_ignored_labels_fall_back(chain_calls: list[int]) -> None:
    model, x, y = _mlp()

    def smoothed(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=0.1)

    space_loss = dense_hessian(model, (x, y), loss_fn=smoothed)
    assert not chain_calls
    plain = dense_hessian(model, (x, y))
    assert (space_loss - plain).abs().max() > 1e-6  # the loss given was used
    ignored = y.clone()
    ignored[:5] = -100  # F.cross_entropy's ignore_index: those samples leave the mean
    reference = autograd_hessian(model, x, ignored)
    torch.testing.assert_close(
        dense_hessian(model, (x, ignored)), reference, rtol=1e-10, atol=1e-12
    )
    assert chain_calls == [1]  # only the plain call
    with pytest.raises(ValueError, match="not the default cross-entropy"):
        dense_hessian(model, (x, y), loss_fn=smoothed, engine="chain")
    with pytest.raises(ValueError, match="unknown engine"):
        dense_hessian(model, (x, y), engine="fast")  # type: ignore[arg-type]
