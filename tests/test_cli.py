"""The command line: train + show, resume, and one-line errors with exit code 2."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lossatlas.cli import app
from lossatlas.lock import LOCK_NAME
from lossatlas.store import AtlasStore

runner = CliRunner()
SMOKE = ["--preset", "smoke"]


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def assert_user_error(result, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1, result.stderr


def test_train_then_show_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = invoke("train", "--out", str(out), *SMOKE, "--members", "3", "train.members_per_unit=2")
    assert first.exit_code == 0, first.output
    assert "ran 2 unit(s)" in first.output
    store = AtlasStore.open(out, read_only=True)
    params = store.read("train/params")
    assert params.shape[0] == 3 and np.isfinite(params).all()
    assert store.completed_units("train") == ["members-0000-0001", "members-0002-0002"]

    shown = invoke("show", str(out))
    assert shown.exit_code == 0
    assert "params" in shown.output and "units 2/2" in shown.output

    again = invoke("train", "--out", str(out), *SMOKE, "--members", "3", "train.members_per_unit=2")
    assert again.exit_code == 0
    assert "ran 0 unit(s), skipped 2" in again.output
    assert np.array_equal(AtlasStore.open(out, read_only=True).read("train/params"), params)


def test_same_config_gives_same_numbers(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert invoke("train", "--out", str(tmp_path / name), *SMOKE).exit_code == 0
    a = AtlasStore.open(tmp_path / "a", read_only=True).read("train/params")
    b = AtlasStore.open(tmp_path / "b", read_only=True).read("train/params")
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train.lrr=0.1"], "train.lrr: unknown option"),
        (["train.lr=-1"], "train.lr"),
        (["train.members=many"], "train.members"),
        (["--preset", "nope"], "preset 'nope' not found"),
        (["--config", "/no/such/file.yaml"], "config file not found"),
        (["data.name=npz"], "data.path is required"),
        (["noequals"], "key=value"),
        (["--data", "imagenet"], "imagenet"),
        (["--model", "transformer"], "transformer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = invoke("train", "--out", str(tmp_path / "x"), *SMOKE, *args)
    assert_user_error(result, fragment)


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [0.1\n")
    assert_user_error(
        invoke("train", "--out", str(tmp_path / "x"), "--config", str(bad)), "malformed YAML"
    )


def test_different_config_refused_and_store_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke("train", "--out", str(out), *SMOKE).exit_code == 0
    # Every file of the run, byte for byte and by time. The one exception is the driver lock,
    # OUT/.lossatlas.lock: it is not data, and each driver that takes it rewrites it to say who
    # holds it (lossatlas.lock), so its time changes by design.
    lock = out / LOCK_NAME

    def files() -> dict[Path, tuple[int, bytes]]:
        return {
            p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in out.rglob("*")
            if p != lock
        }

    before = files()
    result = invoke("train", "--out", str(out), *SMOKE, "train.lr=0.2")
    assert_user_error(result, "different config")
    assert files() == before
    # The refused command let the lock go: a fresh open file description can flock it.
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_out_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert_user_error(invoke("train", "--out", str(target), *SMOKE), str(target))


def test_show_missing_store(tmp_path: Path) -> None:
    assert_user_error(invoke("show", str(tmp_path / "none")), "no atlas store")


def test_all_members_diverging_is_an_error_but_keeps_the_store(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke("train", "--out", str(out), *SMOKE, "train.lr=1e30", "train.momentum=0")
    assert_user_error(result, "diverged")
    assert AtlasStore.open(out, read_only=True).read("train/diverged").all()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = invoke("train", "--out", str(tmp_path / "x"), *SMOKE, "train.lrr=1", "--debug")
    assert result.exit_code != 0
    assert result.exception is not None


def _train_cmd(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lossatlas",
        "train",
        "--out",
        str(out),
        *SMOKE,
        "train.members=6",
        "train.members_per_unit=1",
        "train.epochs=3",
    ]


def test_killed_run_resumes_without_recomputing(tmp_path: Path) -> None:
    """SIGKILL mid-run; the re-run finishes only the missing units and matches a clean run."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_train_cmd(clean), check=True, capture_output=True, env=env, timeout=300)

    proc = subprocess.Popen(
        _train_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    units = killed / "atlas.zarr" / "train" / "_units"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if units.is_dir() and len(list(units.iterdir())) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = AtlasStore.open(killed, read_only=True)
    done_before = {
        u: store.unit_info("train", u)["finished"] for u in store.completed_units("train")
    }
    assert 1 <= len(done_before) < 6, "the kill should land mid-run"

    result = subprocess.run(
        _train_cmd(killed), capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert f"skipped {len(done_before)} already complete" in result.stdout
    store = AtlasStore.open(killed, read_only=True)
    for unit, finished in done_before.items():  # completed units were not run again
        assert store.unit_info("train", unit)["finished"] == finished
    reference = AtlasStore.open(clean, read_only=True)
    for name in ("train/params", "train/init", "train/history/test_loss"):
        assert np.array_equal(store.read(name), reference.read(name)), name


def test_threads_option_sets_torch_threads_and_keeps_the_numbers(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        one = invoke("train", "--out", str(tmp_path / "one"), *SMOKE, "--threads", "1")
        assert one.exit_code == 0, one.output
        assert torch.get_num_threads() == 1  # CliRunner runs the command in this process
    finally:
        torch.set_num_threads(before)
    default = invoke("train", "--out", str(tmp_path / "default"), *SMOKE)
    assert default.exit_code == 0, default.output
    # The thread count is not part of the store's fingerprint, and results agree closely.
    a = AtlasStore.open(tmp_path / "one", read_only=True).read("train/params")
    b = AtlasStore.open(tmp_path / "default", read_only=True).read("train/params")
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert_user_error(
        invoke("train", "--out", str(tmp_path / "x"), *SMOKE, "--threads", "0"), "execution.threads"
    )


def test_help_names_the_ray_extra() -> None:
    # Rich reads "[ray]" as markup unless it is escaped; the help then said "needs lossatlas".
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "lossatlas[ray]" in result.output
