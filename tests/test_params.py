from __future__ import annotations

import pytest
import torch
from torch import nn

from lossatlas.params import ParamSpace
from tests.conftest import tiny_mlp


def conv_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def test_flat_order_follows_named_parameters() -> None:
    model = tiny_mlp()
    space = ParamSpace(model)
    theta = space.flatten()
    expected = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert theta.shape == (space.dim,)
    assert torch.equal(theta, expected)
    assert space.names == tuple(n for n, _ in model.named_parameters())


def test_unflatten_returns_views_without_copies() -> None:
    space = ParamSpace(tiny_mlp())
    theta = space.flatten()
    views = space.unflatten(theta)
    for view in views.values():
        assert view.untyped_storage().data_ptr() == theta.untyped_storage().data_ptr()
    theta.zero_()
    assert all(float(v.abs().sum()) == 0.0 for v in views.values())


def test_batched_unflatten_and_flatten_round_trip() -> None:
    space = ParamSpace(tiny_mlp())
    thetas = torch.randn(4, space.dim)
    views = space.unflatten(thetas)
    assert views["0.weight"].shape == (4, 7, 5)
    assert torch.equal(space.flatten(views), thetas)


def test_forward_matches_module_and_load_round_trips() -> None:
    model = tiny_mlp()
    space = ParamSpace(model)
    x = torch.randn(10, 5)
    theta = torch.randn(space.dim)
    out = space.forward(theta, x)
    space.load(theta)
    torch.testing.assert_close(out, model(x))
    torch.testing.assert_close(space.flatten(), theta)


def test_wrong_shape_is_rejected() -> None:
    space = ParamSpace(tiny_mlp())
    with pytest.raises(ValueError, match="D="):
        space.unflatten(torch.zeros(space.dim + 1))


def test_filter_normalisation_matches_filter_norms_and_zeroes_biases_and_bn() -> None:
    model = conv_model()
    space = ParamSpace(model)
    center = space.flatten()
    direction = space.random_direction(torch.Generator().manual_seed(3), kind="filter")
    d, w = space.unflatten(direction), space.unflatten(center)
    for name, tensor in d.items():
        if tensor.dim() <= 1:  # biases and BatchNorm affine parameters
            assert float(tensor.abs().sum()) == 0.0, name
        else:
            torch.testing.assert_close(
                tensor.reshape(tensor.shape[0], -1).norm(dim=1),
                w[name].reshape(tensor.shape[0], -1).norm(dim=1),
                rtol=1e-5,
                atol=1e-6,
            )


def test_directions_are_deterministic_and_batched() -> None:
    space = ParamSpace(tiny_mlp())
    a = space.random_direction(torch.Generator().manual_seed(1), kind="gaussian", count=3)
    b = space.random_direction(torch.Generator().manual_seed(1), kind="gaussian", count=3)
    assert a.shape == (3, space.dim)
    assert torch.equal(a, b)
    batched = space.filter_normalize(a, space.flatten())
    single = torch.stack([space.filter_normalize(row, space.flatten()) for row in a])
    torch.testing.assert_close(batched, single)
    assert not space.filter_mask()[space.slots[1].start : space.slots[1].stop].any()


def test_buffers_are_copied() -> None:
    model = conv_model()
    space = ParamSpace(model)
    buffers = space.buffers()
    assert set(buffers) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    buffers["1.running_mean"] += 1
    assert float(model[1].running_mean.abs().sum()) == 0.0
