"""A corpus of bad inputs: each gives one clear line, exit code 2, no traceback, and leaves an
existing store untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossatlas.cli import app

runner = CliRunner()


def npz(tmp: Path, **changes: object) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(40, 6)).astype(np.float32),
        "y_train": rng.integers(0, 3, 40),
        "x_test": rng.normal(size=(10, 6)),
        "y_test": rng.integers(0, 3, 10),
    }
    arrays.update(changes)  # type: ignore[arg-type]
    path = tmp / "data.npz"
    np.savez(path, **arrays)
    return path


def bad_yaml(tmp: Path) -> list[str]:
    (tmp / "c.yaml").write_text("train: [unclosed\n")
    return ["--config", str(tmp / "c.yaml")]


def yaml_list(tmp: Path) -> list[str]:
    (tmp / "c.yaml").write_text("- a\n- b\n")
    return ["--config", str(tmp / "c.yaml")]


def truncated_npz(tmp: Path) -> list[str]:
    path = npz(tmp)
    path.write_bytes(path.read_bytes()[:100])
    return ["data.name=npz", f"data.path={path}"]


def missing_npz(tmp: Path) -> list[str]:
    return ["data.name=npz", f"data.path={tmp / 'nope.npz'}"]


def npz_with(**changes: object) -> Callable[[Path], list[str]]:
    return lambda tmp: ["data.name=npz", f"data.path={npz(tmp, **changes)}"]


def nan_x() -> np.ndarray:
    x = np.zeros((40, 6), np.float32)
    x[3, 2] = np.nan
    return x


CORPUS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "malformed yaml": (bad_yaml, "malformed YAML"),
    "yaml not a mapping": (yaml_list, "expected a mapping"),
    "unknown key": (lambda t: ["train.learning_rate=0.1"], "unknown option"),
    "unknown section": (lambda t: ["optimiser.lr=0.1"], "unknown option"),
    "wrong type": (lambda t: ["train.epochs=three"], "train.epochs"),
    "negative lr": (lambda t: ["train.lr=-0.1"], "train.lr"),
    "zero members": (lambda t: ["train.members=0"], "train.members"),
    "bad device": (lambda t: ["device=tpu"], "device"),
    "label noise > 1": (lambda t: ["data.label_noise=1.5"], "data.label_noise"),
    "preset not found": (lambda t: ["--preset", "huge"], "preset 'huge' not found"),
    "config file missing": (lambda t: ["--config", str(t / "none.yaml")], "not found"),
    "override without =": (lambda t: ["train.lr"], "key=value"),
    "unknown dataset": (lambda t: ["data.name=imagenet"], "imagenet"),
    "unknown model": (lambda t: ["model.name=vit"], "vit"),
    "dataset file missing": (missing_npz, "nope.npz"),
    "truncated dataset": (truncated_npz, "data.npz"),
    "x and y lengths differ": (npz_with(y_train=np.zeros(39, int)), "data.npz"),
    "NaN in data": (npz_with(x_train=nan_x()), "NaN"),
    "negative labels": (npz_with(y_train=-np.ones(40, int)), "data.npz"),
    "shape mismatch train/test": (npz_with(x_test=np.zeros((10, 5))), "data.npz"),
    "npz needs a path": (lambda t: ["data.name=npz"], "data.path is required"),
    "bad toy option": (lambda t: ["wedges.toy.n_long=50"], "n_long"),
    "bad sweep option": (lambda t: ["wedges.sweep.epochs=0"], "wedges.sweep.epochs"),
    "model too deep for input": (lambda t: ["model.name=simplecnn"], "simplecnn"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_input(tmp_path: Path, case: str) -> None:
    make_args, fragment = CORPUS[case]
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", "--out", str(out), "--preset", "smoke", *make_args(tmp_path)]
    )
    assert result.exit_code == 2, (case, result.output)
    assert "Traceback" not in result.output
    assert fragment in result.output, (case, result.output)
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    assert not (out / "atlas.zarr").exists(), "a failed run must not leave a store behind"


def test_read_only_out_dir(tmp_path: Path) -> None:
    import os
    import subprocess

    if (
        os.geteuid() == 0
        and subprocess.run(["unshare", "--help"], capture_output=True).returncode != 0
    ):
        pytest.skip("root ignores file modes and unshare is unavailable")
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o500)
        result = runner.invoke(app, ["train", "--out", str(target), "--preset", "smoke"])
        assert result.exit_code == 2 and "Traceback" not in result.output
        return
    # As root, mount the folder read-only in a private mount namespace.
    script = (
        f"mount --bind {target} {target} && mount -o remount,ro,bind {target} && "
        f"{__import__('sys').executable} -m lossatlas train --out {target} --preset smoke"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True
    )
    if "mount:" in proc.stderr:
        pytest.skip(f"cannot make a read-only mount here: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1
