"""SimpleCNN of Fort & Jastrzebski, "Large Scale Structure of Neural Network Loss Landscapes"
(NeurIPS 2019): 3x3 convolutions with 16, 32, 32 channels, each followed by 2x2 max pooling,
tanh, and a linear head. About 19.5k parameters on CIFAR-10.
"""

from __future__ import annotations

import torch
from torch import nn

from lossatlas.config import ModelConfig
from lossatlas.errors import ConfigError
from lossatlas.models.common import (
    activation,
    default,
    dropout_layers,
    expect_image_shape,
    scaled,
)
from lossatlas.models.registry import register_model

__all__ = ["SimpleCNN", "build_simplecnn"]


class SimpleCNN(nn.Module):
    """``depth`` x [Conv3x3 -> (BatchNorm2d) -> activation -> MaxPool2x2 -> (Dropout)], Linear.

    Channels are ``(w, 2w, 2w, 2w, ...)``. Input ``(B, C, H, W)``, output ``(B, num_classes)``.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        width: int,
        depth: int,
        act: str,
        dropout: float,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        in_channels, height, width_px = input_shape
        if min(height, width_px) < 2**depth:
            raise ConfigError(
                f"simplecnn: a {height}x{width_px} image is too small for {depth} 2x2 poolings "
                f"(needs at least {2**depth}x{2**depth}); use a smaller model.depth"
            )
        layers: list[nn.Module] = []
        for i in range(depth):
            out_channels = width if i == 0 else 2 * width
            layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers += [activation(act), nn.MaxPool2d(2), *dropout_layers(dropout)]
            in_channels, height, width_px = out_channels, height // 2, width_px // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(in_channels * height * width_px, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, num_classes)``."""
        return self.head(self.features(x))


@register_model("simplecnn")
def build_simplecnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> SimpleCNN:
    """Defaults: 3 conv blocks, 16/32/32 channels, tanh, no BatchNorm; input ``(C, H, W)``."""
    return SimpleCNN(
        expect_image_shape("simplecnn", input_shape),
        num_classes,
        width=scaled(default(cfg.width, 16), cfg.width_multiplier),
        depth=default(cfg.depth, 3),
        act=default(cfg.activation, "tanh"),
        dropout=cfg.dropout,
        batchnorm=default(cfg.batchnorm, False),
    )
