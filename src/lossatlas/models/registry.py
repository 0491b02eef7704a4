"""Name -> builder registry behind :func:`lossatlas.models.build_model`.

A builder is any callable ``builder(cfg, input_shape, num_classes) -> nn.Module``. It only has
to construct the module: seeding and weight initialisation are done by ``build_model``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lossatlas.config import ModelConfig
from lossatlas.errors import ConfigError

__all__ = ["Builder", "available_models", "get_builder", "register_model"]

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]

_BUILDERS: dict[str, Builder] = {}


def register_model(name: str, *, replace: bool = False) -> Callable[[Builder], Builder]:
    """Decorator that registers ``builder(cfg, input_shape, num_classes) -> nn.Module``.

    Registering a name twice is an error unless ``replace=True``, so two plugins cannot
    silently shadow each other.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")

    def decorator(builder: Builder) -> Builder:
        if name in _BUILDERS and not replace:
            raise ConfigError(f"model '{name}' is already registered (pass replace=True)")
        _BUILDERS[name] = builder
        return builder

    return decorator


def available_models() -> list[str]:
    """Sorted names of every registered architecture."""
    return sorted(_BUILDERS)


def get_builder(name: str) -> Builder:
    """The builder registered as ``name``; :class:`ConfigError` if there is none."""
    try:
        return _BUILDERS[name]
    except KeyError:
        known = ", ".join(available_models())
        raise ConfigError(f"unknown model '{name}' (available: {known})") from None
