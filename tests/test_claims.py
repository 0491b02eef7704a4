from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lossatlas.claims import Claim, load_claims, save_claims
from lossatlas.stages.summary import write_summary
from lossatlas.store import AtlasStore


def claim(cid: str, holds: bool | None) -> Claim:
    return Claim(
        id=cid,
        statement="s",
        paper_value={"mid": 845},
        paper_setup="paper",
        measured={
            "value": np.float32(1.5),
            "curve": torch.tensor([1.0, float("nan")]),
            "n": np.int64(3),
        },
        holds=holds,
        setup="ours",
        criterion="value > 1",
    )


def test_claims_round_trip_and_summary(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config={"seed": 0})
    save_claims(store, [claim("b.two", False), claim("a.one", True)])
    save_claims(store, [claim("c.three", None)])
    loaded = load_claims(store)
    assert [c.id for c in loaded] == ["a.one", "b.two", "c.three"]
    assert loaded[0].measured == {"value": 1.5, "curve": [1.0, None], "n": 3}
    path = write_summary(store)
    summary = json.loads(path.read_text())
    assert summary["counts"] == {
        "claims": 3,
        "holds": 1,
        "fails": 1,
        "inconclusive": 1,
        "does_not_hold": 1,
        "undecided": 1,
    }
    assert summary["claims"][1]["paper_value"] == {"mid": 845}
    assert not (tmp_path / "summary.json.partial").exists()


def test_verdict_follows_holds_and_evidence_round_trips(tmp_path: Path) -> None:
    from lossatlas.claims import Control, Evidence

    assert claim("x", True).verdict == "holds"
    assert claim("x", False).verdict == "fails"
    assert claim("x", None).verdict == "inconclusive"
    evidence = Evidence(
        statistic="Spearman rho between LR and width at the common norm",
        estimate=0.8,
        ci95=(0.4, 1.0),
        threshold=0.0,
        replicates=3,
        control=Control("LR labels permuted", 0.05, "fails", {"null_95": [-0.9, 0.9]}),
    )
    record = Claim(**{**claim("d.four", None).__dict__, "evidence": evidence})
    store = AtlasStore.open(tmp_path, config={"seed": 0})
    save_claims(store, [record])
    (loaded,) = load_claims(store)
    assert loaded.evidence == evidence
    summary = json.loads(write_summary(store).read_text())
    assert summary["claims"][0]["evidence"]["ci95"] == [0.4, 1.0]
    assert summary["claims"][0]["verdict"] == "inconclusive"
    assert summary["claims"][0]["holds"] is None


def test_a_record_without_verdict_reads_as_before() -> None:
    old = {k: v for k, v in claim("e", False).to_json().items() if k not in {"verdict", "evidence"}}
    loaded = Claim.from_json(old)
    assert (loaded.verdict, loaded.evidence) == ("fails", None)


def test_holds_and_verdict_must_agree() -> None:
    import pytest

    with pytest.raises(ValueError, match="contradicts"):
        Claim(**{**claim("f", True).__dict__, "verdict": "fails"})
    with pytest.raises(ValueError, match="not one of"):
        Claim(**{**claim("g", None).__dict__, "verdict": "maybe"})
