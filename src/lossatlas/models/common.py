"""Small helpers shared by the architectures: defaults, widths, activations, shape checks."""

from __future__ import annotations

import math
from typing import TypeVar

from torch import nn

from lossatlas.errors import ConfigError

__all__ = [
    "activation",
    "default",
    "dropout_layers",
    "expect_image_shape",
    "round_half_up",
    "scaled",
]

T = TypeVar("T")

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def default(value: T | None, fallback: T) -> T:
    """``value`` unless it is ``None`` (the config's "use the architecture default")."""
    return fallback if value is None else value


def round_half_up(x: float) -> int:
    # Python's round() rounds half to even (round(2.5) == 2), which surprises in a width.
    return math.floor(x + 0.5)


def scaled(width: int, multiplier: float) -> int:
    """``width * multiplier`` rounded to the nearest integer, at least 1."""
    return max(1, round_half_up(width * multiplier))


def activation(name: str) -> nn.Module:
    """A fresh activation module. Never ``inplace=True``: in-place ops break vmap/autograd."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"unknown activation '{name}' (use relu, tanh or gelu)") from None


def dropout_layers(p: float) -> list[nn.Module]:
    """``[nn.Dropout(p)]`` if ``p > 0`` else ``[]``, so a model without dropout has none."""
    return [nn.Dropout(p)] if p > 0 else []


def expect_image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Check that ``input_shape`` is ``(C, H, W)``; return it, else raise ConfigError."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model '{name}' needs image inputs of shape (C, H, W), got {input_shape}; "
            "use mlp or cnn1d for 1-D data"
        )
    c, h, w = input_shape
    return c, h, w
