"""Device and dtype resolution shared by every stage."""

from __future__ import annotations

from typing import Literal

import torch

from lossatlas.errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["float32", "float64"]

__all__ = ["DeviceName", "DtypeName", "resolve_device", "resolve_dtype"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Map ``auto|cpu|cuda`` (or a ``torch.device``) to a device; ``auto`` prefers CUDA."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{name}' (use auto, cpu or cuda)") from exc


def resolve_dtype(name: str | torch.dtype = "float32") -> torch.dtype:
    """Map ``float32|float64`` to a torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise ConfigError(f"unknown dtype '{name}' (use float32 or float64)")
    return table[name]


def apply_threads(threads: int | None) -> None:
    """Set this process's torch thread count (``None`` leaves torch's default)."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
