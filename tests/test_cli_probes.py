"""Probe commands on a stored member and on a user checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossatlas.checkpoint import save_checkpoint
from lossatlas.cli import app
from lossatlas.config import load_config
from lossatlas.context import run_dataset, template_model
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "run"
    result = runner.invoke(
        app, ["train", "--out", str(out), "--preset", "smoke", "train.snapshot_every=1"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_width_on_a_member_resumes_and_refuses_other_options(trained: Path) -> None:
    first = runner.invoke(app, ["width", "--out", str(trained), "--directions", "4", "--snapshots"])
    assert first.exit_code == 0, first.output
    store = AtlasStore.open(trained, read_only=True)
    distances = store.read("probes/width/default/distances")
    assert distances.shape == (4,) and np.isfinite(distances).all()
    curve = store.read("probes/width/default/snapshots/width_mean")
    assert curve.shape == (4,)  # epochs 0-3 of the smoke preset
    assert store.has("probes/width/default/figures/width_vs_norm.png")
    again = runner.invoke(app, ["width", "--out", str(trained), "--directions", "4", "--snapshots"])
    assert "already complete" in again.output
    other = runner.invoke(app, ["width", "--out", str(trained), "--directions", "5"])
    assert other.exit_code == 2 and "another --name" in other.output


def test_width_on_a_checkpoint(tmp_path: Path) -> None:
    config = load_config("smoke", schema=RunConfig)
    checkpoint = save_checkpoint(
        tmp_path / "w.safetensors", template_model(config, run_dataset(config))
    )
    result = runner.invoke(
        app,
        [
            "width",
            "--out",
            str(tmp_path / "ck"),
            "--preset",
            "smoke",
            "--checkpoint",
            str(checkpoint),
            "--directions",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert AtlasStore.open(tmp_path / "ck", read_only=True).has("probes/width/default/distances")


def test_probe_errors_are_one_line(tmp_path: Path, trained: Path) -> None:
    missing = runner.invoke(app, ["width", "--out", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "no atlas store" in missing.output
    member = runner.invoke(app, ["width", "--out", str(trained), "--member", "7"])
    assert member.exit_code == 2 and "member 7 does not exist" in member.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    corrupt = runner.invoke(
        app, ["width", "--out", str(tmp_path / "ck"), "--preset", "smoke", "--checkpoint", str(bad)]
    )
    assert corrupt.exit_code == 2 and "corrupt" in corrupt.output
