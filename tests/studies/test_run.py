"""`lossatlas run --preset smoke`: outputs, claims, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from html import escape as html_escape
from pathlib import Path

import pytest

from lossatlas.stages.output import SECTION_ATTR
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi.study import HOROI_EXPERIMENTS
from lossatlas.studies.wedges.study import WEDGE_EXPERIMENTS

WEDGE_CLAIMS = {
    "toy.hyperplane_threshold",
    "toy.tunnel",
    "toy.radial_probe",
    "wedge.radial_cuts",
    "wedge.linear_barrier",
    "wedge.tunnel_low_loss",
    "wedge.tunnel_two_blocks",
    "wedge.tunnel_label_changes",
    "wedge.tunnel_short_dirs",
    "wedge.connector_low_loss",
    "wedge.connector_short_dirs",
    "wedge.lr_width",
    "wedge.lr_short_dirs",
    "wedge.l2_width",
    "wedge.dropout_width",
    "wedge.batch_width",
    "wedge.width_scale",
    "wedge.ensemble_vs_swa",
    "wedge.ensemble_baselines",
}
HOROI_CLAIMS = {
    "horoi.jump_retrain",
    "horoi.phate_vs_linear",
    "horoi.topology_summary",
    "horoi.generalization_separation",
}
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "lossatlas", "run", "--out", str(out), "--preset", "smoke"]


def numbers(summary: dict) -> dict[str, object]:  # type: ignore[type-arg]
    return {c["id"]: (c["measured"], c["holds"]) for c in summary["claims"]}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "clean"
    result = subprocess.run(run_cmd(out), capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def test_run_writes_store_summary_and_report(clean_run: Path) -> None:
    summary = json.loads((clean_run / "summary.json").read_text())
    ids = {c["id"] for c in summary["claims"]}
    assert ids >= WEDGE_CLAIMS
    store = AtlasStore.open(clean_run, read_only=True)
    if store.has("horoi"):
        assert ids >= HOROI_CLAIMS
    for claim in summary["claims"]:
        assert claim["measured"], claim["id"]
        assert claim["holds"] in (True, False, None)
    html = (clean_run / "report.html").read_text()
    assert "wedge.tunnel_low_loss" in html and "<img" in html
    # Each wedge experiment is named, with the part of the paper it reproduces, in the store
    # and in the report.
    for step, (title, paper_figure) in WEDGE_EXPERIMENTS.items():
        section = store.attrs(f"wedges/{step}")[SECTION_ATTR]
        assert (section["title"], section["paper_figure"]) == (title, paper_figure)
        assert html_escape(title) in html
    if store.has("horoi"):
        for group, (title, paper_figure) in HOROI_EXPERIMENTS.items():
            section = store.attrs(group)[SECTION_ATTR]
            assert (section["title"], section["paper_figure"]) == (title, paper_figure)
            assert html_escape(title) in html


def test_rerun_recomputes_nothing(clean_run: Path) -> None:
    result = subprocess.run(
        run_cmd(clean_run), capture_output=True, text=True, env=ENV, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "done in" not in result.stderr  # every step reports "already complete"
    assert "already complete" in result.stderr


@pytest.mark.parametrize(
    "marker",
    [
        pytest.param("train", marks=pytest.mark.slow),  # during training
        "wedges/tunnel",  # during the probes
        pytest.param("wedges/sweep", marks=pytest.mark.slow),
        pytest.param("horoi", marks=pytest.mark.slow),  # during the second study
    ],
)
def test_sigkill_then_resume_gives_the_same_numbers(
    clean_run: Path, tmp_path: Path, marker: str
) -> None:
    """Kill `run` once the given group has started, then resume: same summary numbers."""
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        run_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    target = out / "atlas.zarr" / marker / "zarr.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not target.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists() or marker == "train"
    done_before = {}
    if (out / "atlas.zarr").exists():
        store = AtlasStore.open(out, read_only=True)
        for group in ("train", "wedges/toy", "wedges/radial_cuts", "wedges/tunnel"):
            if store.has(group):
                for unit in store.completed_units(group):
                    done_before[(group, unit)] = store.unit_info(group, unit)["finished"]
    result = subprocess.run(run_cmd(out), capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr
    store = AtlasStore.open(out, read_only=True)
    for (group, unit), finished in done_before.items():  # completed units were not redone
        assert store.unit_info(group, unit)["finished"] == finished
    resumed = json.loads((out / "summary.json").read_text())
    reference = json.loads((clean_run / "summary.json").read_text())
    assert numbers(resumed) == numbers(reference)


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from Linux's /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


@pytest.mark.slow  # three runs on the process pool (~3 min on 2 cores)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_with_the_studies_side_by_side_then_resume(tmp_path: Path) -> None:
    """Kill a pooled run while the Horoi process runs beside the wedge study: none of the
    driver's processes outlive it, and the resumed run gives the clean run's numbers."""

    def pooled(out: Path) -> list[str]:
        return [*run_cmd(out), "--executor", "processes"]

    clean = tmp_path / "clean"
    done = subprocess.run(pooled(clean), capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        pooled(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    target = out / "atlas.zarr" / "horoi" / "good" / "train" / "zarr.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not target.exists():
        time.sleep(0.05)
    children = _children(proc.pid)
    assert children  # the pool's workers and the Horoi process
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.2)
    left = [c for c in children if c in _children(1) or Path(f"/proc/{c}/stat").exists()]
    assert not left, f"processes outlived the killed driver: {left}"
    result = subprocess.run(pooled(out), capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr
    resumed = json.loads((out / "summary.json").read_text())
    reference = json.loads((clean / "summary.json").read_text())
    assert numbers(resumed) == numbers(reference)
