"""How a step tells the report what it is: figure captions and alt text, the experiment's title
and the paper figure it reproduces (stages.output), written without recomputing."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossatlas.stages.output import (
    SECTION_ATTR,
    Caption,
    StageOutput,
    describe_section,
    describe_step,
    run_step,
    write_output,
)
from lossatlas.store import AtlasStore

CALLS: list[str] = []


def _step(out: str, config_json: str) -> StageOutput:
    CALLS.append(out)
    return StageOutput(scalars={"x": 1}, figures={"f.png": b"\x89PNG\r\n\x1a\n"})


def test_captions_are_stored_with_their_figures(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config={"seed": 0})
    store.ensure_group("g")
    write_output(
        store,
        "g",
        StageOutput(
            figures={"a.png": b"a", "b.png": b"b", "c.html": b"<div></div>"},
            captions={
                "a.png": Caption("What a shows: look for x.", "a's alt"),
                "c.html": ("c", ""),
            },
        ),
    )
    assert store.attrs("g/figures/a.png") == {
        "media_type": "image/png", "nbytes": 1, "caption": "What a shows: look for x.",
        "alt": "a's alt",
    }  # fmt: skip
    assert "caption" not in store.attrs("g/figures/b.png")
    assert store.attrs("g/figures/c.html")["caption"] == "c"
    assert Caption("only a caption").alt == ""


def test_run_step_names_the_experiment_even_when_already_complete(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path, config={"seed": 0})
    CALLS.clear()
    assert run_step(tmp_path, "s/tunnel", {"v": 1}, _step, "{}")
    store = AtlasStore.open(tmp_path, read_only=True)
    assert SECTION_ATTR not in store.attrs("s/tunnel")
    # A store made before the step named itself gains the names without recomputing.
    ran = run_step(
        tmp_path, "s/tunnel", {"v": 1}, _step, "{}", title="Tunnels", paper_figure="Fig. 3"
    )
    assert not ran and len(CALLS) == 1
    section = AtlasStore.open(tmp_path, read_only=True).attrs("s/tunnel")[SECTION_ATTR]
    assert section == {"title": "Tunnels", "paper_figure": "Fig. 3"}


def test_describe_step_merges_and_describe_section_keeps_its_fields(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config={"seed": 0})
    describe_step(store, "s/a", title="A")
    describe_step(store, "s/a", paper_figure="Fig. 1")
    assert store.attrs("s/a")[SECTION_ATTR] == {"title": "A", "paper_figure": "Fig. 1"}
    assert not (tmp_path / "atlas.zarr" / "s" / "a" / "_units").exists()
    describe_section(store, "s", title="S", text="cite", order=0, steps=["a"], paper_setup="p")
    assert store.attrs("s")[SECTION_ATTR] == {
        "title": "S", "text": "cite", "order": 0, "steps": ["a"], "paper_setup": "p",
    }  # fmt: skip
    describe_section(store, "t", title="T", text="", order=1)
    assert "paper_setup" not in store.attrs("t")[SECTION_ATTR]


@pytest.mark.parametrize("field", ["title", "paper_figure"])
def test_claim_records_without_the_new_fields_still_load(field: str) -> None:
    from lossatlas.claims import Claim

    record = Claim("a.b", "s", 1, "p", {}, True, "o", "c").to_json()
    assert record[field] == ""
    del record[field]
    assert getattr(Claim.from_json(record), field) == ""
