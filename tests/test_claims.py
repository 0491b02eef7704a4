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
    assert summary["counts"] == {"claims": 3, "holds": 1, "does_not_hold": 1, "undecided": 1}
    assert summary["claims"][1]["paper_value"] == {"mid": 845}
    assert not (tmp_path / "summary.json.partial").exists()
