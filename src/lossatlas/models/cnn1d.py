"""1-D CNN for MNIST-1D, after the ``ConvBase`` model of Greydanus & Kobak (2024).

Default: three stride-2 convolutions with 25 channels (kernel 5, then 3, 3), ReLU, and a
linear head: 40 -> 19 -> 10 -> 5 positions, 25 * 5 = 125 features, about 5.2k parameters.
Striding instead of pooling keeps the model tiny while still shift-tolerant enough for
MNIST-1D's translated digits.
"""

from __future__ import annotations

import torch
from torch import nn

from lossatlas.config import ModelConfig
from lossatlas.errors import ConfigError
from lossatlas.models.common import activation, default, dropout_layers, scaled
from lossatlas.models.registry import register_model

__all__ = ["CNN1D", "build_cnn1d"]

_STRIDE = 2
_PADDING = 1


def _kernel(layer: int) -> int:
    return 5 if layer == 0 else 3


def _out_length(length: int, kernel: int) -> int:
    return (length + 2 * _PADDING - kernel) // _STRIDE + 1


class CNN1D(nn.Module):
    """``depth`` x [Conv1d(stride 2) -> (BatchNorm1d) -> activation -> (Dropout)], Linear.

    Input ``(B, L)`` (one channel) or ``(B, C, L)``; output ``(B, num_classes)``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        channels: int,
        depth: int,
        act: str,
        dropout: float,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        in_channels, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
        # Fixed at build time, so forward has no data-dependent control flow (vmap-safe).
        self.conv_input_shape = (in_channels, length)
        layers: list[nn.Module] = []
        for i in range(depth):
            if _out_length(length, _kernel(i)) < 1:
                raise ConfigError(
                    f"cnn1d: depth {depth} is too deep for input length {input_shape[-1]} "
                    f"(nothing left after conv layer {i + 1}); use a smaller model.depth"
                )
            layers.append(
                nn.Conv1d(in_channels, channels, _kernel(i), stride=_STRIDE, padding=_PADDING)
            )
            if batchnorm:
                layers.append(nn.BatchNorm1d(channels))
            layers += [activation(act), *dropout_layers(dropout)]
            in_channels, length = channels, _out_length(length, _kernel(i))
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(in_channels * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` or ``(B, C, L)`` -> ``(B, num_classes)``."""
        x = x.reshape(x.shape[0], *self.conv_input_shape)
        return self.head(self.features(x))


@register_model("cnn1d")
def build_cnn1d(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> CNN1D:
    """Defaults: 3 conv layers, 25 channels, ReLU, no BatchNorm; input ``(L,)`` or ``(C, L)``."""
    if len(input_shape) not in (1, 2):
        raise ConfigError(
            f"model 'cnn1d' needs 1-D inputs of shape (L,) or (C, L), got {input_shape}; "
            "use simplecnn, resnet or wrn for images"
        )
    return CNN1D(
        input_shape,
        num_classes,
        channels=scaled(default(cfg.width, 25), cfg.width_multiplier),
        depth=default(cfg.depth, 3),
        act=default(cfg.activation, "relu"),
        dropout=cfg.dropout,
        batchnorm=default(cfg.batchnorm, False),
    )
