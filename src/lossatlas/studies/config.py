"""``RunConfig``: everything ``lossatlas run`` needs, the core config plus both study sections.

Each study owns its options (:mod:`lossatlas.studies.wedges.config`,
:mod:`lossatlas.studies.horoi.config`); this module only puts them side by side.
"""

from __future__ import annotations

from pydantic import Field

from lossatlas.config import Config
from lossatlas.errors import ConfigError
from lossatlas.studies.horoi.config import HoroiConfig
from lossatlas.studies.wedges.config import WedgesConfig

__all__ = ["RunConfig", "check_replicates"]


class RunConfig(Config):
    """Everything ``lossatlas run`` needs: the core config plus both studies."""

    wedges: WedgesConfig = Field(default_factory=WedgesConfig)
    horoi: HoroiConfig = Field(default_factory=HoroiConfig)


def check_replicates(config: RunConfig) -> None:
    """Refuse a wedge study whose base population cannot be split into its replicates.

    Checked before the study runs (not on every config: a ``train`` or probe command may use a
    population of any size). Raises :class:`~lossatlas.errors.ConfigError`.
    """
    wedges, members = config.wedges, config.train.members
    if members % wedges.replicates:
        raise ConfigError(
            f"train.members ({members}) must be a multiple of wedges.replicates "
            f"({wedges.replicates}): each replicate owns members / replicates networks"
        )
    need = max(2, wedges.connect.max_m + 1)
    if members // wedges.replicates < need:
        raise ConfigError(
            f"each of the {wedges.replicates} replicates needs {need} networks (cuts and tunnel: "
            f"2, connectors: max_m + 1 = {wedges.connect.max_m + 1}); set train.members to "
            f"{need * wedges.replicates}"
        )
