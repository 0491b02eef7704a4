"""The report and the comparison page in a real browser, as a reader opens them: headless
Chromium draws them, runs their scripts without a console error, unpacks plotly.js and draws
every interactive figure, shows every claim with a verdict badge, and the first screen is the
dashboard, not a blank page.

Skipped when Chromium is not installed (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lossatlas.claims import load_claims, save_claims
from lossatlas.report import build_comparison, build_report
from lossatlas.store import AtlasStore
from tests.report._stores import _config, build_store, evidence_claim

_BROWSER = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
pytestmark = pytest.mark.skipif(
    _BROWSER is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium)",
)

# Flags that keep a headless run hermetic: no GPU, no sandbox (containers run as root), no
# profile sync or component downloads, so the only thing the browser loads is the page.
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
_WINDOW = (1280, 900)  # a laptop screen: what a reader sees above the fold
# Console messages, CSP violations and uncaught exceptions all appear as CONSOLE log lines;
# the browser's own performance notices (e.g. about software WebGL) are not page errors.
_CONSOLE = re.compile(r":CONSOLE[:(]")
_PROBLEM = re.compile(r"Uncaught|[Ee]rror|Content Security Policy|Refused|Failed to load")
# The verdict badges' background colours (base.html.j2: --holds-bg, --fails-bg).
_HOLDS_BG, _FAILS_BG = (0xDA, 0xFB, 0xE1), (0xFF, 0xEB, 0xE9)


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    command = [str(_BROWSER), *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def _browse(page: Path, tmp: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One browser run: a screenshot of the first screen, the DOM after the scripts ran (its
    stdout), and the console log (its stderr)."""
    shot = tmp / f"{page.stem}.png"
    result = _chromium(
        tmp,
        f"--screenshot={shot}",
        "--dump-dom",
        f"--window-size={_WINDOW[0]},{_WINDOW[1]}",
        "--enable-logging=stderr",
        "--v=0",
        # Virtual time: the page's timers (which draw the figures one by one after load) run
        # without waiting in real time.
        "--virtual-time-budget=30000",
        page.as_uri(),
    )
    return shot, result


def _console_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if _CONSOLE.search(line) and _PROBLEM.search(line)]


def _pixels(shot: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (_WINDOW[1], _WINDOW[0])
    return np.round(pixels[..., :3] * 255).astype(np.int64)


def _assert_not_blank(shot: Path) -> np.ndarray:
    rgb = _pixels(shot)
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert colours.size > 100, "the page looks blank"
    assert float(rgb.std()) > 10
    return rgb


def _shows_colour(rgb: np.ndarray, colour: tuple[int, int, int], at_least: int = 200) -> bool:
    return int(np.all(rgb == np.array(colour), axis=-1).sum()) >= at_least


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs with different seeds and one claim whose verdict differs; the first has a 3-D
    surface (the gl3d build of plotly.js) and the scatter twin."""
    root = tmp_path_factory.mktemp("browser")
    first = build_store(root / "seed0", interactive="surface")
    config = _config()
    config["seed"] = 1
    second = build_store(root / "seed1", config=config)
    flipped = evidence_claim("wedge.linear_barrier", "fails", estimate=-0.1, ci=(-0.3, 0.2))
    save_claims(AtlasStore.open(second, create=False), [flipped])
    return first, second


@pytest.fixture(scope="module")
def report(
    runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    page = build_report(runs[0])
    return _browse(page, tmp_path_factory.mktemp("chromium-report"))


@pytest.fixture(scope="module")
def comparison(
    runs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("chromium-compare")
    page = build_comparison(list(runs), tmp / "comparison.html")
    return _browse(page, tmp)


def test_report_runs_without_console_errors_and_draws_every_figure(
    report: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, result = report
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console_problems(result.stderr) == []
    dom = result.stdout
    boxes = re.findall(r'<div class="plotly-box[^"]*"', dom)
    assert len(boxes) == 1
    assert all("drawn" in box for box in boxes), boxes
    ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div', dom)
    pieces = re.split(r'<div id="[^"]+" class="plotly-graph-div', dom)[1:]
    for graph_id, piece in zip(ids, pieces, strict=True):
        assert 'class="main-svg"' in piece, f"plotly did not draw figure {graph_id}"
        assert "gl-container" in piece, "the 3-D surface is drawn by the gl3d build"


def test_report_shows_every_claim_with_a_verdict_badge(
    runs: tuple[Path, Path], report: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    dom = report[1].stdout
    for claim in load_claims(AtlasStore.open(runs[0], read_only=True)):
        row = re.search(
            rf'<details class="claim {claim.verdict}" id="[^"]+" data-claim="{re.escape(claim.id)}"'
            r".*?</summary>",
            dom,
            re.DOTALL,
        )
        assert row, claim.id
        assert f'class="badge verdict {claim.verdict}"' in row.group(0), claim.id
        assert "<details open" not in row.group(0)


def test_report_opens_on_the_dashboard(
    report: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    shot, result = report
    assert shot.is_file(), result.stderr[-2000:]
    rgb = _assert_not_blank(shot)
    # The first screen holds the verdict badges of the dashboard, green and red.
    assert _shows_colour(rgb, _HOLDS_BG) and _shows_colour(rgb, _FAILS_BG)


def test_comparison_page_flags_the_differing_verdict(
    runs: tuple[Path, Path], comparison: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    shot, result = comparison
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console_problems(result.stderr) == []
    dom = result.stdout
    ids = {c.id for run in runs for c in load_claims(AtlasStore.open(run, read_only=True))}
    pattern = r'<tr id="[^"]+" class="(differs|same)" data-claim="([^"]+)">'
    flagged = {cid: cls for cls, cid in re.findall(pattern, dom)}
    assert set(flagged) == ids
    assert [cid for cid, cls in flagged.items() if cls == "differs"] == ["wedge.linear_barrier"]
    for cid in ids:
        row = re.search(rf'data-claim="{re.escape(cid)}">.*?</tr>', dom, re.DOTALL)
        assert row and row.group(0).count('class="badge verdict') == 2, cid
    rgb = _assert_not_blank(shot)
    assert _shows_colour(rgb, _HOLDS_BG, 50) and _shows_colour(rgb, _FAILS_BG, 50)


def test_console_scan_catches_errors(tmp_path: Path) -> None:
    # The scan above must not pass vacuously: a page with a script error is caught.
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>missingFunction();</script></body></html>")
    result = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    assert any("Uncaught" in line for line in _console_problems(result.stderr)), result.stderr[
        -2000:
    ]
