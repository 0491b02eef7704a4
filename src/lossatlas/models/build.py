"""Seeded construction and re-initialisation of models.

Every random draw here happens inside ``torch.random.fork_rng``, so building or re-drawing a
model never changes the caller's global RNG state. Draws are always made on the CPU, so the
same seed gives the same weights whatever device the model lives on.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from lossatlas.config import ModelConfig
from lossatlas.errors import ConfigError
from lossatlas.models.registry import get_builder
from lossatlas.seeding import derive_seed

__all__ = ["build_model", "reinitialize"]


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ConfigError(f"input_shape must be a non-empty tuple of ints, got {input_shape!r}")
    if any(d < 1 for d in shape):
        raise ConfigError(f"input_shape must have positive sizes, got {shape}")
    return shape


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, *, seed: int = 0
) -> nn.Module:
    """Build the architecture ``cfg.name`` with weights drawn deterministically from ``seed``.

    Args:
        cfg: which architecture and its hyper-parameters.
        input_shape: shape of one example without the batch dimension, e.g. ``(40,)`` or
            ``(3, 32, 32)``.
        num_classes: size of the output; the model maps ``(B, *input_shape) -> (B, num_classes)``.
        seed: initialisation seed. ``build_model(..., seed=s)`` has exactly the weights of
            ``reinitialize(model, s)``; the global RNG state is left untouched.

    Raises:
        ConfigError: unknown name, or a shape/option combination the architecture cannot take.
    """
    builder = get_builder(cfg.name)
    shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    # Construction draws default inits; fork and seed so that it neither consumes the global
    # stream nor depends on it (a user builder may create parameters reinitialize cannot redraw).
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(derive_seed(seed, "model-build"))
        model = builder(cfg, shape, num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"builder for '{cfg.name}' returned {type(model).__name__}, not nn.Module")
    reinitialize(model, seed)
    return model


def _reset_post_order(module: nn.Module, seen: set[int]) -> None:
    # Children first, parents last: a container's own reset_parameters (e.g. ResNet's He
    # init of every conv) then overrides its children's defaults, as it would in __init__.
    for child in module.children():
        if id(child) not in seen:
            seen.add(id(child))
            _reset_post_order(child, seen)
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()


def reinitialize(model: nn.Module, seed: int) -> None:
    """Re-draw every parameter (and reset buffers such as BatchNorm running stats) in place.

    Calls ``reset_parameters()`` of every submodule, children before parents, under a forked
    CPU RNG seeded from ``seed``. Parameter objects keep their identity, device and dtype.
    Custom modules take part by defining ``reset_parameters()``.
    """
    on_cpu = all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))
    # Init functions draw on the tensor's own device (a CUDA tensor uses the CUDA generator),
    # so a model elsewhere is re-drawn as a CPU copy and copied back: device-independent values.
    target = model if on_cpu else copy.deepcopy(model).to("cpu")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.random.default_generator.manual_seed(derive_seed(seed, "model-init"))
        _reset_post_order(target, {id(target)})
    if target is not model:
        # Parameters and buffers in module order (non-persistent buffers included).
        with torch.no_grad():
            pairs = zip(
                (*model.parameters(), *model.buffers()),
                (*target.parameters(), *target.buffers()),
                strict=True,
            )
            for dst, src in pairs:
                dst.copy_(src)
