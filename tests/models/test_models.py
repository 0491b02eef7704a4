"""Tests for the model registry: shapes, seeding, vmap/functional_call, errors, sizes."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from lossatlas.config import ModelConfig
from lossatlas.errors import ConfigError
from lossatlas.models import available_models, build_model, register_model, reinitialize
from lossatlas.models import registry as registry_module

NUM_CLASSES = 5
MEMBERS = 3
BATCH = 4

# (id, ModelConfig fields, input shape): tiny widths so the whole file runs in seconds, and
# between them every option (BatchNorm, dropout, activations, channel counts) is exercised.
CASES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("mlp", {"name": "mlp", "width": 8}, (40,)),
    (
        "mlp-bn-dropout-gelu",
        {"name": "mlp", "width": 8, "batchnorm": True, "dropout": 0.2, "activation": "gelu"},
        (2, 20),
    ),
    ("cnn1d", {"name": "cnn1d", "width": 4}, (40,)),
    (
        "cnn1d-bn-dropout-2ch",
        {"name": "cnn1d", "width": 4, "batchnorm": True, "dropout": 0.1},
        (2, 40),
    ),
    ("simplecnn", {"name": "simplecnn", "width": 2}, (3, 16, 16)),
    (
        "simplecnn-bn-dropout-relu",
        {"name": "simplecnn", "width": 2, "batchnorm": True, "dropout": 0.1, "activation": "relu"},
        (1, 12, 12),
    ),
    ("resnet", {"name": "resnet", "depth": 8, "width": 2, "dropout": 0.1}, (1, 8, 8)),
    (
        "resnet-nobn-tanh",
        {"name": "resnet", "depth": 8, "width": 2, "batchnorm": False, "activation": "tanh"},
        (3, 8, 8),
    ),
    (
        "wrn",
        {"name": "wrn", "depth": 10, "width": 2, "width_multiplier": 0.5, "dropout": 0.1},
        (3, 8, 8),
    ),
]
CASE_IDS = [case[0] for case in CASES]


def _build(fields: dict[str, Any], shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    return build_model(ModelConfig(**fields), shape, NUM_CLASSES, seed=seed)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- registry


def test_available_models_lists_builtins() -> None:
    assert {"mlp", "cnn1d", "simplecnn", "resnet", "wrn"} <= set(available_models())
    assert available_models() == sorted(available_models())


def test_unknown_model_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'nope' \(available: .*mlp") as info:
        build_model(ModelConfig(name="nope"), (40,), 10)
    assert "\n" not in str(info.value)


def test_register_model_adds_a_user_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    # A private copy of the registry, so the test leaves no trace behind.
    monkeypatch.setattr(registry_module, "_BUILDERS", dict(registry_module._BUILDERS))

    @register_model("tiny")
    def build_tiny(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))

    assert "tiny" in available_models()
    model = build_model(ModelConfig(name="tiny"), (2, 3), 4, seed=1)
    assert model(torch.zeros(7, 2, 3)).shape == (7, 4)
    assert _same_weights(model, build_model(ModelConfig(name="tiny"), (2, 3), 4, seed=1))

    with pytest.raises(ConfigError, match="already registered"):
        register_model("tiny")(build_tiny)
    register_model("tiny", replace=True)(build_tiny)  # explicit replacement is allowed

    register_model("broken")(lambda cfg, shape, n: "not a module")
    with pytest.raises(TypeError, match=r"not nn\.Module"):
        build_model(ModelConfig(name="broken"), (2,), 2)


# --------------------------------------------------------------------------- shapes, seeding


@pytest.mark.parametrize(("fields", "shape"), [c[1:] for c in CASES], ids=CASE_IDS)
def test_output_shape_deterministic_init_and_rng_untouched(
    fields: dict[str, Any], shape: tuple[int, ...]
) -> None:
    rng_before = torch.random.get_rng_state()
    model = _build(fields, shape, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before)

    assert _same_weights(model, _build(fields, shape, seed=0))
    other = _build(fields, shape, seed=1)
    assert any(
        not torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters(), strict=True)
    )

    for mode in (True, False):
        model.train(mode)
        assert model(torch.randn(BATCH, *shape)).shape == (BATCH, NUM_CLASSES)
    # No in-place activations anywhere: they break vmap/autograd.
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize(("fields", "shape"), [c[1:] for c in CASES], ids=CASE_IDS)
def test_reinitialize_redraws_in_place_like_build(
    fields: dict[str, Any], shape: tuple[int, ...]
) -> None:
    model = _build(fields, shape, seed=0)
    model.train()
    model(torch.randn(BATCH, *shape))  # moves BatchNorm running stats away from their reset
    params_before = list(model.parameters())

    rng_before = torch.random.get_rng_state()
    reinitialize(model, 7)
    assert torch.equal(torch.random.get_rng_state(), rng_before)

    assert all(p is q for p, q in zip(params_before, model.parameters(), strict=True))
    # Same weights (and fresh running stats) as a model built with that seed.
    assert _same_weights(model, _build(fields, shape, seed=7))

    model.double()
    reinitialize(model, 7)
    assert all(p.dtype == torch.float64 for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_reinitialize_on_cuda_matches_cpu() -> None:
    fields, shape = {"name": "resnet", "depth": 8, "width": 2}, (3, 8, 8)
    model = _build(fields, shape, seed=0).cuda()
    cuda_rng = torch.cuda.get_rng_state()
    reinitialize(model, 3)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_rng)
    assert _same_weights(model.cpu(), _build(fields, shape, seed=3))


# --------------------------------------------------------------------------- vmap


def _member_data(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(MEMBERS, BATCH, *shape, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (MEMBERS, BATCH), generator=gen)
    return x, y


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("fields", "shape"), [c[1:] for c in CASES], ids=CASE_IDS)
def test_vmap_functional_call_matches_a_loop_over_members(
    fields: dict[str, Any], shape: tuple[int, ...], train: bool
) -> None:
    # Without dropout the vmapped forward must equal member-by-member calls exactly, and in
    # train mode the per-member BatchNorm running stats must update as if run one by one.
    fields = {**fields, "dropout": 0.0}
    members = [_build(fields, shape, seed=s).train(train) for s in range(MEMBERS)]
    params, buffers = stack_module_state(members)
    base = members[0]
    x, _ = _member_data(shape)

    def forward(p: dict, b: dict, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (xb,))

    buffers_before = {k: v.clone() for k, v in buffers.items()}
    out = vmap(forward)(params, buffers, x)
    assert out.shape == (MEMBERS, BATCH, NUM_CLASSES)

    for i, member in enumerate(members):
        own_buffers = {k: v.clone() for k, v in member.named_buffers()}
        ref = functional_call(member, (dict(member.named_parameters()), own_buffers), (x[i],))
        torch.testing.assert_close(out[i], ref, rtol=1e-4, atol=1e-5)
        for k, v in own_buffers.items():
            torch.testing.assert_close(buffers[k][i], v)

    if train and buffers:
        mean_key = next(k for k in buffers if k.endswith("running_mean"))
        assert not torch.equal(buffers[mean_key], buffers_before[mean_key])
        assert not torch.equal(buffers[mean_key][0], buffers[mean_key][1])  # per member
    else:
        assert all(torch.equal(buffers[k], buffers_before[k]) for k in buffers)


@pytest.mark.parametrize(("fields", "shape"), [c[1:] for c in CASES], ids=CASE_IDS)
def test_vmap_grad_with_dropout_and_batched_buffers(
    fields: dict[str, Any], shape: tuple[int, ...]
) -> None:
    # The population trainer's pattern: per-member gradients with buffers passed in (not
    # captured), dropout drawing different masks per member.
    members = [_build(fields, shape, seed=s) for s in range(MEMBERS)]
    params, buffers = stack_module_state(members)
    base = members[0]
    x, y = _member_data(shape)

    def loss(p: dict, b: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    for train in (True, False):
        base.train(train)
        grads = vmap(grad(loss), randomness="different")(params, buffers, x, y)
        assert grads.keys() == params.keys()
        for k, g in grads.items():
            assert g.shape == params[k].shape
            assert torch.isfinite(g).all()
        # The other common pattern: one grad of the summed per-member losses.
        total = grad(lambda p, b: vmap(loss, randomness="different")(p, b, x, y).sum())
        assert total(params, buffers).keys() == params.keys()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fields", "shape", "message"),
    [
        ({"name": "simplecnn"}, (40,), "needs image inputs of shape"),
        ({"name": "resnet"}, (40,), "needs image inputs of shape"),
        ({"name": "wrn"}, (1, 40), "needs image inputs of shape"),
        ({"name": "cnn1d"}, (3, 32, 32), "needs 1-D inputs"),
        ({"name": "resnet", "depth": 21}, (3, 8, 8), r"6n\+2"),
        ({"name": "wrn", "depth": 27}, (3, 8, 8), r"6n\+4"),
        ({"name": "wrn", "depth": 4}, (3, 8, 8), r"6n\+4"),
        ({"name": "cnn1d"}, (2,), "too deep for input length 2"),
        ({"name": "simplecnn", "depth": 4}, (1, 8, 8), "too small"),
        ({"name": "mlp"}, (), "non-empty tuple"),
        ({"name": "mlp"}, (0,), "positive sizes"),
    ],
)
def test_impossible_shapes_and_depths_are_config_errors(
    fields: dict[str, Any], shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_model(ModelConfig(**fields), shape, 10)
    assert "\n" not in str(info.value)


def test_bad_num_classes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(ModelConfig(), (40,), 0)


# --------------------------------------------------------------------------- sizes


def test_default_mlp_has_the_exact_parameter_count() -> None:
    model = build_model(ModelConfig(name="mlp"), (40,), 10)
    assert _n_params(model) == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("cnn1d", (40,), 5_210),  # the MNIST-1D paper's ~5k-parameter CNN
        ("simplecnn", (3, 32, 32), 19_466),
        ("resnet", (3, 32, 32), 269_722),  # ResNet-20: "0.27M" in He et al. (2016)
        ("wrn", (3, 32, 32), 1_467_610),  # WRN-28-2: "1.5M" in Zagoruyko & Komodakis (2016)
    ],
)
def test_default_parameter_counts(name: str, shape: tuple[int, ...], expected: int) -> None:
    assert _n_params(build_model(ModelConfig(name=name), shape, 10)) == expected


def test_width_multiplier_scales_and_rounds_widths() -> None:
    def hidden(multiplier: float) -> int:
        cfg = ModelConfig(name="mlp", width=10, width_multiplier=multiplier)
        return build_model(cfg, (4,), 2).head.in_features

    assert (hidden(0.5), hidden(0.25), hidden(0.01), hidden(2.0)) == (5, 3, 1, 20)

    # wrn: widen factor k = round(2 * width_multiplier): 5 -> WRN-d-10.
    wrn = build_model(ModelConfig(name="wrn", depth=10, width=1, width_multiplier=5), (1, 4, 4), 2)
    assert wrn.head.in_features == 1 * 10 * 4


@pytest.mark.parametrize("name", ["resnet", "wrn", "simplecnn"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_image_models_take_grey_and_colour_images(name: str, shape: tuple[int, ...]) -> None:
    depth = {"resnet": 8, "wrn": 10, "simplecnn": None}[name]
    model = build_model(ModelConfig(name=name, width=2, depth=depth), shape, 10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


# --------------------------------------------------------------------------- accuracy (slow)


def _mnist1d_test_accuracy(name: str) -> float:
    """Train on MNIST-1D with the quick preset's settings; return test accuracy.

    Plain SGD, lr 0.1, momentum 0.9, batch 128, 30 epochs, constant LR, data standardised
    with the train set's mean/std. Takes a few seconds on one CPU thread.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    threads = torch.get_num_threads()
    py_state, np_state = random.getstate(), np.random.get_state()
    # One thread: for models this small, extra threads only add synchronisation, and on a
    # loaded machine they make training ~10x slower. It also makes the result reproducible.
    torch.set_num_threads(1)
    try:
        data = make_dataset(get_dataset_args())  # seeds the global random/numpy RNGs
        return _train_and_test(name, data)
    finally:
        torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)


def _train_and_test(name: str, data: dict[str, Any]) -> float:
    x = torch.tensor(data["x"], dtype=torch.float32)
    x_test = torch.tensor(data["x_test"], dtype=torch.float32)
    y, y_test = torch.tensor(data["y"]).long(), torch.tensor(data["y_test"]).long()
    mean, std = x.mean(), x.std()
    x, x_test = (x - mean) / std, (x_test - mean) / std

    model = build_model(ModelConfig(name=name), (40,), 10, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 128):
            idx = order[start : start + 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(dim=1) == y_test).float().mean().item()


@pytest.mark.slow
def test_cnn1d_reaches_85_percent_on_mnist1d() -> None:
    assert _mnist1d_test_accuracy("cnn1d") >= 0.85


@pytest.mark.slow
def test_mlp_reaches_60_percent_on_mnist1d() -> None:
    assert _mnist1d_test_accuracy("mlp") >= 0.60
