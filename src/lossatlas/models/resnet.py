"""CIFAR-style residual networks: ``resnet`` (He et al., 2016) and ``wrn`` (Zagoruyko &
Komodakis, 2016). Both take ``(C, H, W)`` images with any number of channels and any size
(global average pooling before the head), e.g. ``(3, 32, 32)`` or ``(1, 28, 28)``.

- ``resnet``: depth ``6n + 2`` (default 20: ResNet-20, ~0.27M parameters), post-activation
  basic blocks, three stages of ``w, 2w, 4w`` channels with ``w = width * width_multiplier``
  (``width`` default 16), parameter-free "option A" shortcuts (strided identity, zero-padded
  channels) as in the paper's CIFAR experiments.
- ``wrn``: depth ``6n + 4`` (default 28), pre-activation blocks, a ``width``-channel stem
  (default 16) and groups of ``w*k, 2w*k, 4w*k`` channels, 1x1-conv shortcuts where the shape
  changes. The widen factor is ``k = max(1, round(2 * width_multiplier))``, so the default is
  WRN-28-2 (~1.47M parameters) and ``width_multiplier=5`` gives WRN-28-10.

``model.dropout`` sits between the two convolutions of every block (as in the WRN paper).
``model.batchnorm=False`` replaces every BatchNorm by identity and gives the convs a bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lossatlas.config import ModelConfig
from lossatlas.errors import ConfigError
from lossatlas.models.common import (
    activation,
    default,
    dropout_layers,
    expect_image_shape,
    round_half_up,
    scaled,
)
from lossatlas.models.registry import register_model

__all__ = ["CifarResNet", "WideResNet", "build_resnet", "build_wrn"]


def _conv3x3(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def _norm(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def _dropout(p: float) -> nn.Module:
    return nn.Sequential(*dropout_layers(p))  # empty Sequential is the identity


def _he_init_convs(root: nn.Module) -> None:
    # He et al. "MSRA" init (normal, fan_out) for every conv, as in both papers' code; zero
    # conv biases (only present without BatchNorm). BatchNorm and the head keep their defaults.
    for module in root.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _blocks_per_stage(name: str, depth: int, offset: int, minimum: int) -> int:
    if depth < minimum or (depth - offset) % 6 != 0:
        raise ConfigError(
            f"{name}: depth must be 6n+{offset} with n >= 1 (e.g. {minimum}, {minimum + 6}, "
            f"{minimum + 12}), got {depth}"
        )
    return (depth - offset) // 6


# --------------------------------------------------------------------------- ResNet


class _BasicBlock(nn.Module):
    """conv-BN-act-(dropout)-conv-BN, plus shortcut, then act.

    ``(B, C, H, W) -> (B, C', H', W')``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, act: str, dropout: float, bn: bool
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride, bias=not bn)
        self.bn1 = _norm(out_channels, bn)
        self.act1 = activation(act)
        self.dropout = _dropout(dropout)
        self.conv2 = _conv3x3(out_channels, out_channels, 1, bias=not bn)
        self.bn2 = _norm(out_channels, bn)
        self.act2 = activation(act)
        # Option A shortcut: static attributes, so forward's branch does not depend on data.
        self.stride = stride
        extra = out_channels - in_channels
        self.channel_pad = (extra // 2, extra - extra // 2)
        self.identity = stride == 1 and extra == 0

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad's last pair addresses dim -3, the channels (zero-padded on both sides).
        return F.pad(x, (0, 0, 0, 0, *self.channel_pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.act1(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images. Input ``(B, C, H, W)``, output ``(B, num_classes)``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int,
        blocks: int,
        act: str,
        dropout: float,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv3x3(in_channels, width, 1, bias=not batchnorm),
            _norm(width, batchnorm),
            activation(act),
        )
        stages: list[nn.Module] = []
        channels = width
        for stage in range(3):
            out_channels = width * 2**stage
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(_BasicBlock(channels, out_channels, stride, act, dropout, batchnorm))
                channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init of the convs; runs after the children's own resets in ``reinitialize``."""
        _he_init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, num_classes)``."""
        features = self.stages(self.stem(x)).mean(dim=(-2, -1))  # global average pooling
        return self.head(features)


@register_model("resnet")
def build_resnet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
    """Defaults: ResNet-20, base width 16, ReLU, BatchNorm on; input ``(C, H, W)``."""
    channels, _, _ = expect_image_shape("resnet", input_shape)
    return CifarResNet(
        channels,
        num_classes,
        width=scaled(default(cfg.width, 16), cfg.width_multiplier),
        blocks=_blocks_per_stage("resnet", default(cfg.depth, 20), offset=2, minimum=8),
        act=default(cfg.activation, "relu"),
        dropout=cfg.dropout,
        batchnorm=default(cfg.batchnorm, True),
    )


# --------------------------------------------------------------------------- Wide ResNet


class _WideBlock(nn.Module):
    """Pre-activation block: BN-act-conv-BN-act-(dropout)-conv, plus shortcut."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, act: str, dropout: float, bn: bool
    ) -> None:
        super().__init__()
        self.bn1 = _norm(in_channels, bn)
        self.act1 = activation(act)
        self.conv1 = _conv3x3(in_channels, out_channels, stride, bias=not bn)
        self.bn2 = _norm(out_channels, bn)
        self.act2 = activation(act)
        self.dropout = _dropout(dropout)
        self.conv2 = _conv3x3(out_channels, out_channels, 1, bias=not bn)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C', H', W')``."""
        pre = self.act1(self.bn1(x))
        # As in the reference code, a projection shortcut sees the pre-activated input.
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.dropout(self.act2(self.bn2(self.conv1(pre))))
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    """WRN-(6n+4)-k. Input ``(B, C, H, W)``, output ``(B, num_classes)``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        width: int,
        widen: int,
        blocks: int,
        act: str,
        dropout: float,
        batchnorm: bool,
    ) -> None:
        super().__init__()
        self.stem = _conv3x3(in_channels, width, 1, bias=not batchnorm)
        groups: list[nn.Module] = []
        channels = width
        for group in range(3):
            out_channels = width * widen * 2**group
            for block in range(blocks):
                stride = 2 if group > 0 and block == 0 else 1
                groups.append(_WideBlock(channels, out_channels, stride, act, dropout, batchnorm))
                channels = out_channels
        self.groups = nn.Sequential(*groups)
        self.final = nn.Sequential(_norm(channels, batchnorm), activation(act))
        self.head = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init of the convs; runs after the children's own resets in ``reinitialize``."""
        _he_init_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, num_classes)``."""
        features = self.final(self.groups(self.stem(x))).mean(dim=(-2, -1))
        return self.head(features)


@register_model("wrn")
def build_wrn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> WideResNet:
    """Defaults: WRN-28-2 (``k = round(2 * width_multiplier)``), stem width 16, ReLU, BN on."""
    channels, _, _ = expect_image_shape("wrn", input_shape)
    return WideResNet(
        channels,
        num_classes,
        width=default(cfg.width, 16),
        widen=max(1, round_half_up(2 * cfg.width_multiplier)),
        blocks=_blocks_per_stage("wrn", default(cfg.depth, 28), offset=4, minimum=10),
        act=default(cfg.activation, "relu"),
        dropout=cfg.dropout,
        batchnorm=default(cfg.batchnorm, True),
    )
