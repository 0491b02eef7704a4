"""Deterministic preprocessing (standardisation, label noise) and image augmentation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CROP_PADDING",
    "apply_label_noise",
    "augment_batch",
    "fit_standardiser",
    "standardise",
]

CROP_PADDING = 4
_MIN_STD = 1e-6  # constant features (e.g. the always-blank corners of digits) are left at 0
_CHUNK = 4096  # samples per pass when accumulating statistics in float64


def fit_standardiser(x: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``x`` ``(N, *input_shape)``, accumulated in float64.

    ``per_channel`` (images ``(N, C, H, W)``): one value per channel, shapes ``(1, C, 1, 1)``.
    Otherwise one value per feature, shapes ``(1, *input_shape)``. Stds below 1e-6 become 1
    so constant features map to 0 instead of dividing by zero.
    """
    axes = (0, 2, 3) if per_channel else (0,)
    count = x.shape[0] * (x.shape[2] * x.shape[3] if per_channel else 1)
    # Chunks keep the float64 copies small (a float64 copy of CIFAR-10 would be 1.2 GB).
    total = sum(
        np.sum(x[i : i + _CHUNK], axis=axes, dtype=np.float64, keepdims=True)
        for i in range(0, len(x), _CHUNK)
    )
    mean = total / count
    squares = sum(
        np.sum((x[i : i + _CHUNK].astype(np.float64) - mean) ** 2, axis=axes, keepdims=True)
        for i in range(0, len(x), _CHUNK)
    )
    std = np.sqrt(squares / count)
    std = np.where(std < _MIN_STD, 1.0, std)
    return mean, std


def standardise(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, *, copy: bool = True
) -> np.ndarray:
    """``(x - mean) / std`` as a float32 array of ``x``'s shape.

    ``copy=False`` reuses ``x`` when it is already float32 (it is overwritten): the pipeline
    passes fresh copies, and this saves one dataset-sized allocation (600 MB for CIFAR-10).
    """
    out = x.astype(np.float32, copy=copy)
    out -= mean.astype(np.float32)
    out /= std.astype(np.float32)
    return out


def apply_label_noise(
    y: torch.Tensor, p: float, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each label of ``y`` ``(N,)`` with probability ``p`` by a uniform random class.

    The new class is drawn from all ``num_classes``, so it can equal the true one: the share of
    labels that actually change is ``p * (1 - 1 / num_classes)``.

    Returns:
        ``(noisy_y, mask)``: ``(N,)`` int64 labels and ``(N,)`` bool, True where resampled.
    """
    # Both draws are made even when p == 0 so the stream does not depend on p.
    mask = torch.rand(y.shape, generator=generator, device=generator.device) < p
    random_labels = torch.randint(
        num_classes, y.shape, generator=generator, device=generator.device, dtype=torch.int64
    )
    mask, random_labels = mask.to(y.device), random_labels.to(y.device)
    return torch.where(mask, random_labels, y), mask


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (4-pixel zero padding) and horizontal flip, independently per image.

    Args:
        x: ``(..., C, H, W)`` images; any leading batch dims, e.g. ``(members, batch, C, H, W)``.
            The data is already standardised, so the zero padding is the channel mean.
        generator: source of every random draw (on any device; draws are moved to ``x``'s).

    Returns:
        A new tensor of ``x``'s shape, dtype and device.
    """
    if x.ndim < 3:
        raise ValueError(f"augment_batch needs (..., C, H, W) images, got shape {tuple(x.shape)}")
    *lead, channels, height, width = x.shape
    images = x.reshape(-1, channels, height, width)
    n = images.shape[0]
    span = 2 * CROP_PADDING + 1  # crop offsets 0..8 in the padded image
    dev = generator.device
    top = torch.randint(span, (n,), generator=generator, device=dev).to(x.device)
    left = torch.randint(span, (n,), generator=generator, device=dev).to(x.device)
    flip = (torch.rand(n, generator=generator, device=dev) < 0.5).to(x.device)
    padded = F.pad(images, (CROP_PADDING,) * 4)
    rows = top[:, None] + torch.arange(height, device=x.device)  # (n, H)
    cols_ = torch.arange(width, device=x.device)
    # A flip reads the crop window right-to-left, so crop and flip are one gather.
    cols = left[:, None] + torch.where(flip[:, None], width - 1 - cols_, cols_)  # (n, W)
    sample = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices separated by the channel slice move to the front: (n, H, W, C).
    out = padded[sample, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous().reshape(*lead, channels, height, width)
