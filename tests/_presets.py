"""The shipped presets, as tests read them: the smoke preset owns every tiny test setting."""

from __future__ import annotations

import functools

from lossatlas.config import load_config
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges.config import ToyConfig


@functools.cache
def smoke() -> RunConfig:
    """``presets/smoke.yaml`` as a :class:`RunConfig` (cached; treat it as read-only)."""
    return load_config(preset="smoke", schema=RunConfig)


def smoke_toy(**changes: object) -> ToyConfig:
    """The smoke preset's toy options with ``changes`` applied (validated)."""
    return ToyConfig.model_validate({**smoke().wedges.toy.model_dump(), **changes})
