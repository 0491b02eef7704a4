"""Multi-layer perceptron: the MNIST-1D paper's baseline (40 -> 100 -> 100 -> 10 by default)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lossatlas.config import ModelConfig
from lossatlas.models.common import activation, default, dropout_layers, scaled
from lossatlas.models.registry import register_model

__all__ = ["MLP", "build_mlp"]


class MLP(nn.Module):
    """Flatten, then ``depth`` x [Linear -> (BatchNorm1d) -> activation -> (Dropout)], Linear.

    Input ``(B, *input_shape)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        width: int,
        depth: int,
        act: str,
        dropout: float,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for _ in range(depth):
            layers.append(nn.Linear(fan_in, width))
            if batchnorm:
                layers.append(nn.BatchNorm1d(width))
            layers += [activation(act), *dropout_layers(dropout)]
            fan_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(fan_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *input_shape) -> (B, num_classes)``."""
        return self.head(self.features(x))


@register_model("mlp")
def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    """Defaults: 2 hidden layers of 100 units, ReLU, no BatchNorm; any input shape."""
    return MLP(
        math.prod(input_shape),
        num_classes,
        width=scaled(default(cfg.width, 100), cfg.width_multiplier),
        depth=default(cfg.depth, 2),
        act=default(cfg.activation, "relu"),
        dropout=cfg.dropout,
        batchnorm=default(cfg.batchnorm, False),
    )
