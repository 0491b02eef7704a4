"""What names a run: the preset its config matches, the seed, when, and the setups' lines."""

from __future__ import annotations

from pathlib import Path

from lossatlas.config import load_config
from lossatlas.report.run_info import config_changes, match_preset, run_info, setup_paragraphs
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from tests.report._stores import old_claim


def _preset(name: str, *overrides: str) -> dict:
    return load_config(name, overrides=list(overrides), schema=RunConfig).model_dump(mode="json")


def test_a_preset_is_recognised_whatever_its_seed_and_device() -> None:
    assert match_preset(_preset("quick")) == ("quick", [])
    assert match_preset(_preset("smoke", "seed=5", "device=cpu")) == ("smoke", [])
    assert match_preset(_preset("quick", "train.lr=0.05")) == ("quick", ["train.lr"])


def test_a_config_far_from_every_preset_is_custom() -> None:
    config = _preset("quick", *(f"train.{k}=1" for k in ("lr", "epochs", "members")))
    config["data"]["name"] = "digits"
    config["model"]["width"] = 7
    config["model"]["depth"] = 9
    assert match_preset(config) == ("", [])


def test_changes_compare_only_the_sections_the_config_has() -> None:
    reference = {"seed": 0, "data": {"name": "a", "n": 1}, "horoi": {"x": 1}}
    assert config_changes({"seed": 3, "data": {"name": "a", "n": 2}}, reference) == ["data.n"]
    assert config_changes({"data": {"name": "a"}}, reference) == ["data.n"]


def test_run_info_names_the_run(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config=_preset("smoke", "train.lr=0.2", "seed=4"))
    info = run_info(store)
    assert info.preset == "smoke" and info.changed == ("train.lr",)
    assert info.config_note == "smoke preset with 1 setting changed (train.lr)"
    assert info.seed == "4" and info.created.endswith(" UTC")
    assert info.title == f"lossatlas · {info.config_note} · seed 4 · {info.created}"
    assert info.device.startswith("cpu (torch ")


def test_setup_lines_set_this_run_beside_each_paper(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config=_preset("smoke"))
    claims = [old_claim("a.x", True), old_claim("a.y", False)]
    lines = setup_paragraphs(
        store,
        [
            ("Wedge model", "Fort & Jastrzebski (2019), “Title”", "CIFAR-10 CNN", []),
            ("Topology", "", "", claims),
            ("Nothing", "", "", []),
        ],
    )
    assert lines[0] == (
        "This run",
        "mlp (width 32, depth 2) on mnist1d (512 training samples) (6 members, 3 epochs, sgd "
        "at LR 0.1, batch 64).",
    )
    assert lines[1:] == (
        ("Fort & Jastrzebski (2019)", "CIFAR-10 CNN"),
        ("Topology", "WRN-28-2 on CIFAR-10"),
    )
