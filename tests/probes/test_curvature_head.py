"""The closed-form Hessian block of a final Linear head (probes/curvature/_head.py).

dense_hessian takes the head's block from the closed form and its cross terms by symmetry;
each case is checked in float64 against torch.autograd.functional.hessian, and models whose
output is not the head's (or whose head is shared or frozen) must not take the shortcut.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossatlas.params import ParamSpace
from lossatlas.probes.curvature import dense, dense_hessian
from lossatlas.probes.curvature._head import find_head
from tests.conftest import blobs


def autograd_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    space = ParamSpace(model)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(space.forward(theta, x), y)

    return torch.autograd.functional.hessian(loss, space.flatten().detach())


class Scaled(nn.Module):
    """The head's output is changed before it is returned: no closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(5, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.head(torch.tanh(self.body(x)))


class Shared(nn.Module):
    """One Linear applied twice: its input depends on its own weights."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.square = nn.Linear(5, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.square(torch.tanh(self.square(torch.tanh(self.inp(x)))))


def head_of(model: nn.Module, x: torch.Tensor) -> nn.Module | None:
    space = ParamSpace(model)
    head = find_head(model, space, space.flatten().detach(), x, dict(model.named_buffers()))
    return None if head is None else head.module


@pytest.fixture
def closed_forms(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts dense_hessian's calls of the closed form (one per sample chunk)."""
    calls: list[int] = []
    real = dense.head_block

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dense, "head_block", counted)
    return calls


@pytest.mark.parametrize("bias", [True, False])
def test_head_block_gives_the_exact_hessian(bias: bool, closed_forms: list[int]) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 4, bias=bias)
    ).double()
    x, y = blobs(40, classes=4, dtype=torch.float64)
    assert head_of(model, x) is model[4]
    reference = autograd_hessian(model, x, y)
    for kwargs in ({}, {"batch_size": 7}, {"block_size": 5}):
        # A plain chain: the chain engine would take it; the closed form is autodiff's.
        hessian = dense_hessian(model, (x, y), engine="autodiff", **kwargs)
        torch.testing.assert_close(hessian, reference, rtol=1e-10, atol=1e-12)
    assert len(closed_forms) == 1 + 6 + 1  # one per chunk: 40 samples, then in chunks of 7
    # The same loss given explicitly takes the product for every column: the same matrix.
    explicit = dense_hessian(model, (x, y), loss_fn=F.cross_entropy, engine="autodiff")
    assert len(closed_forms) == 8
    torch.testing.assert_close(explicit, reference, rtol=1e-10, atol=1e-12)


def test_models_without_a_plain_head_take_every_product_and_stay_exact(
    closed_forms: list[int],
) -> None:
    x, y = blobs(30, dtype=torch.float64)
    for model in (Scaled().double(), Shared().double()):
        assert head_of(model, x) is None
        reference = autograd_hessian(model, x, y)
        torch.testing.assert_close(dense_hessian(model, (x, y)), reference, rtol=1e-10, atol=1e-12)
    assert not closed_forms


def test_a_frozen_head_or_ignored_labels_take_no_shortcut(closed_forms: list[int]) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = blobs(30, dtype=torch.float64)
    model[2].bias.requires_grad_(False)  # half the head is outside the space
    assert head_of(model, x) is None
    reference = autograd_hessian(model, x, y)
    torch.testing.assert_close(dense_hessian(model, (x, y)), reference, rtol=1e-10, atol=1e-12)
    model[2].bias.requires_grad_(True)
    y = y.clone()
    y[:5] = -100  # F.cross_entropy's ignore_index: those samples drop out of the mean
    reference = autograd_hessian(model, x, y)
    torch.testing.assert_close(dense_hessian(model, (x, y)), reference, rtol=1e-10, atol=1e-12)
    assert not closed_forms
