"""The report in a real browser: headless Chromium draws it, runs its scripts without errors,
and plotly turns every interactive figure into SVG.

Skipped when Chromium is not installed (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lossatlas.claims import Claim
from lossatlas.report import build_report
from lossatlas.stages.output import StageOutput, write_output
from lossatlas.store import AtlasStore
from lossatlas.studies.wedges.toy import run_toy
from tests import _presets

# The toy study at its smallest: every figure (one interactive) and claim, in about a second.
_TOY = _presets.smoke_toy(
    interactive=True,
    variants=[],
    steps=50,
    trials=2,
    tunnel_steps=30,
    slice_resolution=21,
    directions=16,
    path_resolution=8,
)
_BROWSER = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
pytestmark = pytest.mark.skipif(
    _BROWSER is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium)",
)

# Flags that keep a headless run hermetic: no GPU, no sandbox (containers run as root), no
# profile sync or component downloads, so the only thing the browser loads is the report.
_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--hide-scrollbars",
]
# Console messages, CSP violations and uncaught exceptions all appear as CONSOLE log lines;
# the browser's own performance notices (e.g. about software WebGL) are not page errors.
_CONSOLE = re.compile(r":CONSOLE[:(]")
_PROBLEM = re.compile(r"Uncaught|[Ee]rror|Content Security Policy|Refused|Failed to load")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    command = [str(_BROWSER), *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if _CONSOLE.search(line) and _PROBLEM.search(line)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report with stored PNGs, two interactive plotly figures and training curves."""
    from lossatlas.plots.spectrum import spectrum_html

    out = tmp_path_factory.mktemp("browser") / "run"
    store = AtlasStore.open(out, config={"seed": 0, "data": {"name": "mnist1d"}})
    toy = run_toy(_TOY, 0)
    write_output(
        store,
        "wedges/toy",
        StageOutput(figures={**toy.figures, **toy.interactive}, claims=toy.claims),
    )
    grid = np.linspace(-1.0, 5.0, 200)
    density = np.exp(-(grid**2)) + 0.1 * np.exp(-((grid - 4.0) ** 2))
    write_output(
        store,
        "probes/curvature/default",
        StageOutput(
            figures={"spectrum.html": spectrum_html(grid, density)},
            scalars={"top": 4.0},
            claims=[
                Claim("probe.demo", "a demo claim", 1.0, "paper", {"x": 1}, None, "ours", "x > 0")
            ],
        ),
    )
    history = np.linspace(2.3, 0.5, 6)[None, :] + np.arange(3)[:, None] * 0.05
    write_output(
        store,
        "train",
        StageOutput(
            arrays={
                "history/train_loss": history,
                "history/test_loss": history + 0.2,
                "history/train_acc": 1.0 - history / 3,
                "diverged": np.zeros(3, dtype=bool),
            }
        ),
    )
    return build_report(out)


@pytest.fixture(scope="module")
def browsed(
    report: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One browser run: a screenshot, the DOM after the scripts ran, and the console log."""
    tmp = tmp_path_factory.mktemp("chromium")
    shot = tmp / "report.png"
    result = _chromium(
        tmp,
        f"--screenshot={shot}",
        "--dump-dom",
        "--window-size=1280,2000",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",  # virtual time: plotly finishes drawing without waiting
        report.as_uri(),
    )
    return shot, result


def test_screenshot_is_not_blank(browsed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    import matplotlib.image as mpimg

    shot, result = browsed
    assert shot.is_file(), result.stderr[-2000:]
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    rgb = np.round(pixels[..., :3] * 255).astype(np.uint32)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert colours.size > 100, "the page looks blank"
    assert float(pixels[..., :3].std()) > 0.05


def test_page_runs_without_console_errors_and_plotly_draws(
    browsed: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, result = browsed
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console_problems(result.stderr) == []
    dom = result.stdout
    ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div', dom)
    assert len(ids) == 2
    pieces = re.split(r'<div id="[^"]+" class="plotly-graph-div', dom)[1:]
    for graph_id, piece in zip(ids, pieces, strict=True):
        assert 'class="main-svg"' in piece, f"plotly did not draw figure {graph_id}"


def test_console_scan_catches_errors(tmp_path: Path) -> None:
    # The scan above must not pass vacuously: a page with a script error is caught.
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>missingFunction();</script></body></html>")
    result = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    assert any("Uncaught" in line for line in _console_problems(result.stderr)), result.stderr[
        -2000:
    ]
