"""The two containers of the data stage: what a loader returns, and what training consumes."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch

__all__ = ["Dataset", "RawData", "SplitName"]

SplitName = Literal["train", "val", "test"]


@dataclass(frozen=True)
class RawData:
    """Arrays exactly as a loader read them, before any splitting or preprocessing.

    ``x_*`` are ``(N, *input_shape)`` numbers; images are ``(N, C, H, W)`` already scaled to
    ``[0, 1]``. ``y_*`` are ``(N,)`` integer class labels. Anything ``numpy.asarray`` accepts
    works (numpy arrays, CPU tensors, lists).

    Attributes:
        num_classes: the number of classes, or ``None`` to infer ``max(label) + 1``.
        is_image: whether ``x`` is ``(N, C, H, W)`` images (enables augmentation and
            per-channel standardisation); ``None`` infers it from ``x_train.ndim == 4``.
        source: what error messages name, e.g. the file or folder that was read.
    """

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    num_classes: int | None = None
    is_image: bool | None = None
    source: str = ""


# eq=False: comparing tensors element-wise has no single truth value; repr=False: the default
# repr would print every tensor in full.
@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A preprocessed, split dataset held as tensors (CPU unless moved with :meth:`to`).

    Attributes:
        name: the registry name it was loaded under.
        x_train, x_val, x_test: ``(N_split, *input_shape)`` floating point, standardised with
            the train split's statistics. ``N_val`` may be 0.
        y_train, y_val, y_test: ``(N_split,)`` int64 labels; ``y_train`` is after label noise.
        num_classes: labels lie in ``0 .. num_classes - 1``.
        input_shape: one sample's shape, e.g. ``(40,)`` or ``(3, 32, 32)``.
        is_image: ``x`` is ``(N, C, H, W)``; only images are augmented.
        noisy_mask: ``(N_train,)`` bool, True where label noise resampled the label (the new
            label can equal the true one, since it is drawn from all classes).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    is_image: bool
    noisy_mask: torch.Tensor

    def split(self, name: SplitName) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the ``train``, ``val`` or ``test`` split."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split '{name}' (use train, val or test)")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Dataset:
        """A copy on ``device``; ``dtype`` (if given) applies to the inputs ``x`` only.

        Labels stay int64 and ``noisy_mask`` stays bool.
        """
        changes: dict[str, torch.Tensor] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, torch.Tensor):
                continue
            if field.name.startswith("x_") and dtype is not None:
                changes[field.name] = value.to(device=device, dtype=dtype)
            else:
                changes[field.name] = value.to(device=device)
        return replace(self, **changes)  # type: ignore[arg-type]  # tensor fields only

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, is_image={self.is_image}, "
            f"noisy={int(self.noisy_mask.sum())}, dtype={self.x_train.dtype}, "
            f"device={self.x_train.device})"
        )
