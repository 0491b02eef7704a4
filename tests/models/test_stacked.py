"""The stacked engine: traced chains give the same losses and gradients as vmap + autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import grad_and_value, vmap

from lossatlas.config import ModelConfig
from lossatlas.evaluate import member_loss_fn
from lossatlas.models import build_model
from lossatlas.models.stacked import NotTraceable, StackedProgram
from lossatlas.params import ParamSpace
from tests.conftest import tiny_mlp


class _Reshaping(nn.Module):
    """Conv1d without bias, GELU, a view, and a Linear without bias: the less common paths."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, kernel_size=3, stride=1, padding=0, bias=False)
        self.act = nn.GELU()
        self.flat = nn.Flatten()
        self.head = nn.Linear(3 * 4, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], 2, 6)
        return self.head(self.flat(self.act(self.conv(x))))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(12, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.a(x)


class _Shared(nn.Module):
    """One Linear called twice: its gradient is the sum of two uses."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.act, self.head = nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.a(self.act(self.a(x)))))


def _models() -> dict[str, tuple[nn.Module, int, int]]:
    """name -> (float64 model, input features, classes)."""
    return {
        "tanh_mlp": (tiny_mlp(12, 7, 3), 12, 3),
        "mlp": (build_model(ModelConfig(name="mlp", width=9), (12,), 4, seed=0), 12, 4),
        "cnn1d": (build_model(ModelConfig(name="cnn1d", width=5), (40,), 10, seed=0), 40, 10),
        "reshaping": (_Reshaping(), 12, 4),
        # No Linear head last: the default loss's gradient without the features-first head.
        "tanh_out": (nn.Sequential(nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 3), nn.Tanh()), 12, 3),
    }


def _reference(space: ParamSpace, params, xb, yb, loss_fn=None):  # type: ignore[no-untyped-def]
    grads, losses = vmap(grad_and_value(member_loss_fn(space, loss_fn)))(
        space.unflatten(params), {}, xb, yb
    )
    return losses, space.flatten(grads)


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("batch", [1, 13])
def test_step_equals_vmap_autograd(name: str, batch: int) -> None:
    model, inputs, classes = _models()[name]
    space = ParamSpace(model.double())
    g = torch.Generator().manual_seed(0)
    params = torch.randn(3, space.dim, generator=g, dtype=torch.float64) * 0.3
    xb = torch.randn(3, batch, inputs, generator=g, dtype=torch.float64)
    yb = torch.randint(0, classes, (3, batch), generator=g)
    program = StackedProgram(space)
    losses, grads = program.step(params, xb, yb)
    ref_losses, ref_grads = _reference(space, params, xb, yb)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-10, atol=1e-14)


def test_custom_loss_goes_through_autograd_on_the_logits() -> None:
    model, inputs, classes = _models()["cnn1d"]
    space = ParamSpace(model.double())
    g = torch.Generator().manual_seed(1)
    params = torch.randn(2, space.dim, generator=g, dtype=torch.float64) * 0.3
    xb = torch.randn(2, 5, inputs, generator=g, dtype=torch.float64)
    yb = torch.randint(0, classes, (2, 5), generator=g)

    def smooth(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, y, label_smoothing=0.1)

    losses, grads = StackedProgram(space, smooth).step(params, xb, yb)
    ref_losses, ref_grads = _reference(space, params, xb, yb, smooth)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)),
        nn.Sequential(nn.Linear(12, 8), nn.Dropout(0.5), nn.Linear(8, 3)),
        nn.Sequential(nn.Linear(12, 8), nn.Sigmoid(), nn.Linear(8, 3)),
        _Residual(),
        build_model(ModelConfig(name="simplecnn", width=4), (1, 8, 8), 3, seed=0),
    ],
    ids=["batchnorm", "dropout", "sigmoid", "residual", "conv2d"],
)
def test_unsupported_models_are_refused(model: nn.Module) -> None:
    with pytest.raises(NotTraceable):
        StackedProgram(ParamSpace(model))


def test_a_module_called_twice_is_refused() -> None:
    # Each call would write its own gradient over the other's: the sum is never formed.
    with pytest.raises(NotTraceable, match="more than once"):
        StackedProgram(ParamSpace(_Shared()))
