"""``RunConfig``: everything ``lossatlas run`` needs, the core config plus both study sections.

Each study owns its options (:mod:`lossatlas.studies.wedges.config`,
:mod:`lossatlas.studies.horoi.config`); this module only puts them side by side.
"""

from __future__ import annotations

from pydantic import Field

from lossatlas.config import Config
from lossatlas.studies.horoi.config import HoroiConfig
from lossatlas.studies.wedges.config import WedgesConfig

__all__ = ["RunConfig"]


class RunConfig(Config):
    """Everything ``lossatlas run`` needs: the core config plus both studies."""

    wedges: WedgesConfig = Field(default_factory=WedgesConfig)
    horoi: HoroiConfig = Field(default_factory=HoroiConfig)
