"""Probe commands on a stored member and on a user checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossatlas.checkpoint import save_checkpoint
from lossatlas.cli import app
from lossatlas.config import SurfaceOptions, WidthOptions, fingerprint_dump, load_config
from lossatlas.context import run_dataset, template_model
from lossatlas.stages.output import read_output
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


def test_autocast_probes_report_their_error_and_leave_default_fingerprints_alone(
    trained: Path,
) -> None:
    for command in (["width", "--directions", "3"], ["surface", "--dims", "1", "--steps", "5"]):
        result = runner.invoke(
            app, [*command, "--out", str(trained), "--autocast", "bf16", "--name", "bf16"]
        )
        assert result.exit_code == 0, result.output
        kind = command[0]
        scalars = read_output(AtlasStore.open(trained), f"probes/{kind}/bf16").scalars
        assert scalars["autocast"] == "bf16"
        # bf16 keeps 8 mantissa bits: a relative loss error of order 1e-3, never zero, never 10%.
        assert 0.0 < scalars["autocast_max_rel_error"] < 0.05
        assert scalars["autocast_checked_points"] >= 2
    bad = runner.invoke(app, ["width", "--out", str(trained), "--autocast", "fp8"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    # Left at its default, autocast is not in the fingerprint: runs made before the option
    # existed resume.
    assert fingerprint_dump(WidthOptions()) == WidthOptions().model_dump(
        mode="json", exclude={"autocast", "initial_step"}
    )
    assert fingerprint_dump(WidthOptions(initial_step=0.25))["initial_step"] == 0.25
    assert fingerprint_dump(SurfaceOptions(autocast="fp16"))["autocast"] == "fp16"
    assert "row_chunks" not in fingerprint_dump(SurfaceOptions(), exclude={"row_chunks"})
