"""Loading and saving model weights without running pickle.

Checkpoints are safetensors. A user's ``.pt``/``.pth`` file is read with
``torch.load(weights_only=True)``, which refuses arbitrary Python objects, so a malicious
checkpoint cannot execute code. Every problem raises a one-line :class:`CheckpointError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossatlas.errors import CheckpointError

__all__ = ["load_checkpoint", "read_state_dict", "save_checkpoint"]

# Common wrappers that training scripts put around the state dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` or ``.pt``/``.pth``/``.bin`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise many different exception types
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a weights file ({reason})"
        ) from exc
    for key in _NESTED_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return dict(loaded)


def load_checkpoint(path: str | Path, model: nn.Module) -> nn.Module:
    """Load the weights (and buffers) in ``path`` into ``model`` in place, and return it.

    Keys must match exactly; a ``module.`` prefix left by ``DataParallel`` is removed.
    """
    state = read_state_dict(path)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            detail.append(
                f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"
            )
        raise CheckpointError(f"checkpoint {path} does not fit the model ({'; '.join(detail)})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"checkpoint {path}: '{name}' has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected[name].shape)}"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"checkpoint {path}: '{name}' contains NaN or inf")
    model.load_state_dict(state)
    return model


def save_checkpoint(path: str | Path, model: nn.Module) -> Path:
    """Save ``model``'s state dict as safetensors (the format lossatlas writes)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path
