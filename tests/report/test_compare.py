"""Comparing runs: every claim of every run, side by side, with the differences flagged."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossatlas.claims import save_claims
from lossatlas.errors import StoreError
from lossatlas.report import compare_runs, render_comparison
from lossatlas.store import AtlasStore
from tests.report._stores import EVIL, EVIL_ESCAPED, _config, build_store, evidence_claim


def test_runs_are_compared_claim_by_claim(tmp_path: Path) -> None:
    first = build_store(tmp_path / "a")
    config = _config()
    config["seed"] = 2
    second = build_store(tmp_path / "b", config=config)
    store = AtlasStore.open(second, create=False)
    save_claims(
        store,
        [
            evidence_claim("wedge.linear_barrier", "fails", estimate=-0.5, ci=(-0.9, -0.1)),
            evidence_claim("only.in_b", "holds", title=EVIL),
        ],
    )
    comparison = compare_runs([first, second])
    assert comparison.labels == ("A", "B") and comparison.total == 6
    rows = {r.id: r for g in comparison.groups for r in g.rows}
    assert {r.id for r in comparison.differing} == {"wedge.linear_barrier", "only.in_b"}
    barrier = rows["wedge.linear_barrier"]
    assert [(c.verdict, c.estimate, c.ci95) for c in barrier.cells] == [
        ("holds", "0.8", "[0.4, 1]"),
        ("fails", "-0.5", "[-0.9, -0.1]"),
    ]
    assert [c.verdict for c in rows["only.in_b"].cells] == ["absent", "holds"]
    assert [c.verdict for c in rows["horoi.generalization_separation"].cells] == ["fails"] * 2
    assert rows["horoi.generalization_separation"].cells[0].estimate == ""  # no evidence
    # Groups keep the first run's order of papers and experiments.
    assert [(g.paper, g.experiment) for g in comparison.groups][:2] == [
        ("Wedge model", "Tunnels between two optima"),
        ("Wedge model", "Hyperparameters and tunnel width"),
    ]
    varying = {name for name, _, varies in comparison.run_table if varies}
    assert "seed" in varying and "config" not in varying
    html = render_comparison(comparison)
    assert EVIL not in html and EVIL_ESCAPED in html
    assert html.count('class="differs" data-claim=') == 2


def test_fewer_than_two_runs_or_a_missing_store_is_refused(tmp_path: Path) -> None:
    out = build_store(tmp_path / "a")
    with pytest.raises(StoreError, match="at least two"):
        compare_runs([out])
    with pytest.raises(StoreError, match="no atlas store"):
        compare_runs([out, tmp_path / "missing"])
