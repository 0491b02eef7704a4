"""Model registry: ``mlp``, ``cnn1d``, ``simplecnn``, ``resnet`` and ``wrn``.

Every model maps ``(B, *input_shape) -> (B, num_classes)`` and is written for
``torch.func.functional_call`` + ``torch.func.vmap`` over a leading members dimension of its
parameters and buffers (train and eval mode, BatchNorm included): no in-place activations, no
data-dependent Python control flow, no ``.item()`` in ``forward``.

>>> from lossatlas.config import ModelConfig
>>> model = build_model(ModelConfig(name="mlp"), (40,), 10, seed=0)

Add an architecture with::

    @register_model("mine")
    def build_mine(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int):
        return MyModule(...)  # custom init goes in MyModule.reset_parameters()
"""

from __future__ import annotations

# Importing the architecture modules registers them.
from lossatlas.models import cnn1d, mlp, resnet, simplecnn  # noqa: F401
from lossatlas.models.build import build_model, reinitialize
from lossatlas.models.registry import available_models, register_model

__all__ = ["available_models", "build_model", "register_model", "reinitialize"]
