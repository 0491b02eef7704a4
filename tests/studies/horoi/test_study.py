"""The Horoi et al. study (PAPERS B): networks, jumps, embeddings, topology, claims, resume."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lossatlas.claims import Claim, load_claims
from lossatlas.config import Config, load_config
from lossatlas.errors import StoreError
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.horoi import _common as steps
from lossatlas.studies.horoi.config import HoroiConfig, HoroiGeneralization, NetworkVariant
from lossatlas.studies.horoi.networks import config_for_network
from lossatlas.studies.horoi.study import HOROI_CLAIMS, horoi_groups, run_horoi
from lossatlas.studies.horoi.topology import topology_step

NETS = ("good", "poor")
SEEDS = (0, 1)


def smoke_config() -> RunConfig:
    """The smoke preset, as ``lossatlas run`` reads it (core sections plus the studies)."""
    return load_config("smoke", schema=RunConfig)


def _with_horoi(horoi: HoroiConfig) -> RunConfig:
    """The smoke preset with ``horoi`` as its study section."""
    return smoke_config().model_copy(update={"horoi": horoi})


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[Claim]]]:
    """One smoke run of the whole study, shared by the tests below (about 12 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; tiny models gain nothing from more
    try:
        out = tmp_path_factory.mktemp("horoi")
        claims = run_horoi(smoke_config(), out)
        yield out, claims
    finally:
        torch.set_num_threads(threads)


def _numbers(value: Any) -> list[float]:
    """Every number inside a JSON-like tree."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


# --------------------------------------------------------------------------- options


def test_config_for_network_sets_the_knobs_and_keeps_the_rest() -> None:
    base = smoke_config()
    good = config_for_network(base, NetworkVariant(), 3)
    poor = config_for_network(
        base, NetworkVariant(label_noise=0.3, weight_decay=0.0, n_train=100, epochs=5), 3
    )
    assert type(good) is Config
    # The default variant is the run's own network: every knob as the run has it.
    assert good.data == base.data and good.model == base.model
    assert (good.train.weight_decay, good.train.epochs) == (
        base.train.weight_decay,
        base.train.epochs,
    )
    assert good.train.members == poor.train.members == 3
    assert (poor.data.label_noise, poor.train.weight_decay, poor.train.epochs) == (0.3, 0.0, 5)
    assert poor.data.n_train == 100
    # Same seed and model: member i of both networks starts from the same weights.
    assert good.seed == poor.seed == base.seed
    assert good.model == poor.model


def test_horoi_config_defaults_and_validation() -> None:
    config = HoroiConfig()
    assert config.jump.epochs == 40 and config.jump.sizes == [0.25, 0.5, 0.75, 1.0]
    assert config.topology.k == 20 and config.topology.graph_from == "potential"
    assert list(config.generalization.networks) == ["good", "poor"]
    assert config.generalization.networks["good"] == NetworkVariant()
    poor = config.generalization.networks["poor"]
    assert (poor.n_train, poor.weight_decay, poor.epochs) == (800, 0.0, 120)
    assert config.generalization.seeds == [0, 1, 2]
    with pytest.raises(ValidationError):
        HoroiGeneralization(seeds=[0])  # no spread over one seed
    with pytest.raises(ValidationError):
        HoroiGeneralization(networks={"only": NetworkVariant()})
    with pytest.raises(ValidationError):
        HoroiGeneralization(networks={"a/b": NetworkVariant(), "c": NetworkVariant()})
    with pytest.raises(ValidationError):
        HoroiConfig.model_validate({"embed": {"methods": ["phate", "isomap"]}})
    with pytest.raises(ValidationError):
        HoroiConfig.model_validate({"typo": 1})


def test_disabled_study_does_nothing(tmp_path: Path) -> None:
    assert run_horoi(_with_horoi(HoroiConfig(enabled=False)), tmp_path) == []
    assert not (tmp_path / "atlas.zarr").exists()


# --------------------------------------------------------------------------- the smoke run


def test_all_four_claims_with_finite_values(study: tuple[Path, list[Claim]]) -> None:
    out, claims = study
    assert [c.id for c in claims] == sorted(HOROI_CLAIMS)
    stored = {c.id: c for c in load_claims(AtlasStore.open(out, create=False))}
    for claim in claims:
        assert stored[claim.id] == claim
        assert claim.criterion and claim.statement and claim.setup
        values = _numbers(claim.to_json()["measured"])
        assert values and all(math.isfinite(v) for v in values), claim.id
        # Every claim is decided on evidence over the (network, base seed) replicates.
        assert claim.evidence is not None and claim.evidence.control is not None, claim.id
        assert claim.evidence.replicates >= len(SEEDS), claim.id
    by_id = {c.id: c for c in claims}
    sep = by_id["horoi.generalization_separation"].measured
    for net in NETS:
        for key in ("train_acc", "test_acc"):
            values = sep["network_metrics"][net][key]
            assert len(values) == len(SEEDS) and all(0.0 <= v <= 1.0 for v in values)
    topo = by_id["horoi.topology_summary"].evidence
    assert topo is not None and topo.control is not None and topo.control.details["null_95"]
    embed = by_id["horoi.phate_vs_linear"].measured
    assert set(embed["mean"]) == {"phate", "phate_connected", "pca", "tsne", "random_plane"}
    for row in embed["mean"].values():
        assert set(row) == {
            "trustworthiness", "continuity", "demap",
            "purity_trajectory", "purity_size", "purity_direction",
        }  # fmt: skip
    for graph in embed["phate_graph"].values():
        assert graph["components"] >= 1 and graph["connecting_knn"] >= graph["knn"]


def test_each_sample_set_is_counted_and_aligned(study: tuple[Path, list[Claim]]) -> None:
    out, claims = study
    store = AtlasStore.open(out, create=False)
    jump = smoke_config().horoi.jump
    m, t = jump.members, jump.epochs + 1  # 8 jumps, 3 snapshots (jump point + 2 epochs)
    dim = store.read(steps.train_group("good") + "/params").shape[1]
    for net in NETS:
        assert store.read(steps.train_group(net) + "/params").shape == (len(SEEDS), dim)
        for seed in SEEDS:
            data = steps.read_set(store, net, seed)
            assert (data.jumps, data.snapshots) == (m, t)
            assert data.samples.shape == (m * t, dim)
            np.testing.assert_array_equal(data.member, np.repeat(np.arange(m), t))
            embed = steps.set_group(net, "embed", seed)
            assert store.read(f"{embed}/embeddings/phate").shape == (m * t, 2)
            assert store.read(f"{embed}/diff_potential").shape == (m * t, m * t)
            # The filtration is the rank of the test loss of the same rows, on a connected
            # graph: one essential H0 class, born at the lowest rank (1 / S).
            h0 = store.read(steps.set_group(net, "topology", seed) + "/diagrams/h0")
            essential = h0[np.isinf(h0[:, 1])]
            assert essential.shape[0] == 1
            assert essential[0, 0] == pytest.approx(1.0 / (m * t))
    jump_claim = next(c for c in claims if c.id == "horoi.jump_retrain")
    expected = len(NETS) * len(SEEDS) * m * t
    assert jump_claim.measured["samples"] == jump_claim.measured["expected_samples"] == expected
    assert set(jump_claim.measured["samples_per_set"].values()) == {m * t}
    # The base config's own population was not trained: each network has its own group.
    assert not store.has("train")


def _expected_figures(config: HoroiConfig) -> dict[str, list[str]]:
    figures: dict[str, list[str]] = {
        steps.JUMP_SUMMARY: [],
        steps.EMBED_SUMMARY: ["embedding_scores_horoi.png"],
        steps.COMPARE: ["topology_comparison.png"],
    }
    for net in NETS:
        for seed in SEEDS:
            tag = f"{net}_seed{seed}"
            figures[steps.JUMP_SUMMARY] += [f"jump_loss_{tag}.png", f"jump_distance_{tag}.png"]
            figures[steps.set_group(net, "embed", seed)] = [
                f"embedding_{kind}_{tag}.png" for kind in ("loss", "size", "seed", "scores")
            ] + [f"embedding_{m}_{tag}.html" for m in [*config.embed.methods, "phate_connected"]]
            figures[steps.set_group(net, "topology", seed)] = [
                f"barcode_{tag}.png",
                f"diagram_{tag}.png",
            ]
    return figures


def test_every_figure_is_in_the_store(study: tuple[Path, list[Claim]]) -> None:
    out, claims = study
    store = AtlasStore.open(out, create=False)
    expected = _expected_figures(smoke_config().horoi)
    names = set()
    for group, files in expected.items():
        for name in files:
            blob = store.load_bytes(f"{group}/figures/{name}")
            if name.endswith(".png"):
                assert blob.startswith(b"\x89PNG"), name
            else:
                assert b"plotly" in blob.lower(), name
            assert name not in names  # names are unique over the store (the report cites them)
            names.add(name)
    for claim in claims:
        assert claim.figures and set(claim.figures) <= names


def test_groups_listed_by_horoi_groups_are_complete(study: tuple[Path, list[Claim]]) -> None:
    out, _ = study
    store = AtlasStore.open(out, create=False)
    groups = horoi_groups(smoke_config().horoi)
    assert len(groups["jumps"]) == len(groups["embed"]) == len(NETS) * len(SEEDS)
    for kind, names in groups.items():
        for group in names:
            assert store.completed_units(group), (kind, group)


def test_rerun_recomputes_nothing(
    study: tuple[Path, list[Claim]], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, claims = study

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a completed step ran again")

    for name in (
        "embed_step",
        "topology_step",
        "jump_summary_step",
        "embedding_summary_step",
        "compare_step",
    ):
        monkeypatch.setattr(f"lossatlas.studies.horoi.study.{name}", refuse)
    monkeypatch.setattr("lossatlas.stages.train.train_unit", refuse)
    monkeypatch.setattr("lossatlas.stages.jumps._jump_unit", refuse)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = run_horoi(smoke_config(), out)
    finally:
        torch.set_num_threads(threads)
    assert again == claims


@pytest.mark.parametrize(
    "change",
    [
        {"topology": {"k": 5}},
        {"embed": {"knn": 3}},
        {"generalization": {"seeds": [0, 2]}},
    ],
)
def test_a_changed_config_is_refused_before_writing(
    study: tuple[Path, list[Claim]], change: dict[str, Any]
) -> None:
    out, _ = study
    store = AtlasStore.open(out, create=False)
    before = store.attrs(steps.ROOT)
    changed = HoroiConfig.model_validate({**smoke_config().horoi.model_dump(), **change})
    with pytest.raises(StoreError, match="different config"):
        run_horoi(_with_horoi(changed), out)
    assert store.attrs(steps.ROOT) == before


def test_each_step_guards_its_own_group(study: tuple[Path, list[Claim]]) -> None:
    # Even without the study-wide guard, a step's group refuses other settings.
    from lossatlas.stages.output import run_once

    out, _ = study
    group = steps.set_group("good", "topology", 0)
    with pytest.raises(StoreError, match="different config"):
        run_once(out, group, {"other": True}, topology_step)
