"""Every shipped preset is a valid RunConfig (torchtune's rule: each recipe is tested)."""

from __future__ import annotations

import pytest

from lossatlas.config import available_presets, load_config
from lossatlas.studies.config import RunConfig


def test_the_expected_presets_ship() -> None:
    assert {"smoke", "quick", "paper-wedges", "paper-horoi"} <= set(available_presets())


@pytest.mark.parametrize("name", available_presets())
def test_preset_validates(name: str) -> None:
    config = load_config(name, schema=RunConfig)
    assert isinstance(config, RunConfig)
    if config.wedges.enabled:
        # Cuts need 3 optima, tunnels 2, connectors m + 1.
        assert config.train.members >= max(3, config.wedges.connect.max_m + 1)
