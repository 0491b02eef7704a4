"""The ``report`` and ``show`` commands: one run, ``--compare`` of several, ``show --claims``,
and one-line errors with exit code 2 that write nothing."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lossatlas import cli
from lossatlas.claims import save_claims
from lossatlas.cli import app
from lossatlas.store import AtlasStore
from tests.report._stores import _config, build_store, evidence_claim

runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    # A console 160 columns wide, made here: the CLI's own console took its width from the
    # environment when it was imported (80 in a pytest-xdist worker), and the dashboard wraps
    # its cells to fit.
    with mock.patch.object(cli, "console", Console(width=160)):
        return runner.invoke(app, list(args))


def assert_user_error(result, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli-report")
    first = build_store(root / "a")
    config = _config()
    config["seed"] = 7
    second = build_store(root / "b", config=config)
    flipped = evidence_claim("wedge.lr_width", "holds", estimate=0.6, ci=(0.2, 0.9))
    save_claims(AtlasStore.open(second, create=False), [flipped])
    return first, second


def test_report_renders_one_run_to_a_chosen_path(runs: tuple[Path, Path], tmp_path: Path) -> None:
    target = tmp_path / "page.html"
    result = invoke("report", str(runs[0]), "--output", str(target))
    assert result.exit_code == 0, result.output
    assert target.is_file() and (runs[0] / "summary.json").is_file()
    assert 'data-claim="wedge.linear_barrier"' in target.read_text(encoding="utf-8")


def test_report_compare_writes_one_page_and_flags_the_difference(
    runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("report", "--compare", str(runs[0]), str(runs[1]))
    assert result.exit_code == 0, result.output
    page = (tmp_path / "comparison.html").read_text(encoding="utf-8")
    assert 'class="differs" data-claim="wedge.lr_width"' in page
    assert 'class="same" data-claim="wedge.linear_barrier"' in page
    assert 'seed <span class="flag"' in page  # the seeds differ, and the page says so


def test_report_needs_compare_for_several_runs(runs: tuple[Path, Path], tmp_path: Path) -> None:
    assert_user_error(invoke("report", str(runs[0]), str(runs[1])), "add --compare")
    assert_user_error(invoke("report", "--compare", str(runs[0])), "at least two runs")
    missing = tmp_path / "none"
    target = tmp_path / "cmp.html"
    result = invoke("report", "--compare", str(runs[0]), str(missing), "--output", str(target))
    assert_user_error(result, "no atlas store")
    assert not target.exists() and not missing.exists()


def test_show_claims_prints_the_dashboard(runs: tuple[Path, Path]) -> None:
    result = invoke("show", "--claims", str(runs[0]))
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.splitlines()[0].startswith("lossatlas · smoke preset · seed 0")
    assert "Wedge model: 1 hold · 1 fail · 1 inconclusive" in text
    assert "Wedge model › Tunnels between two optima · Fort & Jastrzebski 2019, Fig. 3" in text
    for claim_id in ("wedge.linear_barrier", "wedge.lr_width", "probe.unlisted"):
        assert claim_id in text
    assert "0.8 [0.4, 1]" in text and "no estimate recorded" in text


def test_show_claims_of_a_store_without_claims(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path, config={"seed": 0})
    result = invoke("show", "--claims", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "no claims in this store yet" in result.output


def test_show_claims_of_a_missing_store(tmp_path: Path) -> None:
    assert_user_error(invoke("show", "--claims", str(tmp_path / "none")), "no atlas store")
