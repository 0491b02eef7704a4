"""Golden accuracies on MNIST-1D through the real train stage (slow: run with -m slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossatlas.config import load_config
from lossatlas.stages import train_stage
from lossatlas.studies.config import RunConfig


@pytest.mark.slow
@pytest.mark.parametrize(("model", "floor"), [("mlp", 0.60), ("cnn1d", 0.85)])
def test_quick_preset_reaches_the_expected_test_accuracy(
    tmp_path: Path, model: str, floor: float
) -> None:
    # The quick preset holds both studies' sections, so it loads as a run's config.
    config = load_config("quick", flags={"model.name": model, "device": "cpu"}, schema=RunConfig)
    summary = train_stage(config, tmp_path / model)
    assert not summary.diverged.any()
    assert summary.final["test_acc"].mean() >= floor
