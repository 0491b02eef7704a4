"""What the study's steps share: group names, the sample sets as stored, the claim helper.

Sample row ``r = m * T + t`` is snapshot ``t`` of jump ``m`` in every array of a set: the
samples, their metrics, the embeddings, the potential and the filtration values stay aligned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lossatlas.claims import ClaimMaker, Decision
from lossatlas.config import Config, core_config
from lossatlas.context import config_fingerprint
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.horoi.config import HoroiConfig

__all__ = [
    "COMPARE",
    "EMBED_SUMMARY",
    "JUMP_SUMMARY",
    "PAPER_SETUP",
    "ROOT",
    "SampleSet",
    "claim_maker",
    "core_fingerprint",
    "member_of",
    "part_summary",
    "read_set",
    "set_group",
    "set_tag",
    "sets",
    "setup_line",
    "step_configs",
    "train_group",
]

ROOT = "horoi"
JUMP_SUMMARY = f"{ROOT}/jump_summary"
EMBED_SUMMARY = f"{ROOT}/embedding_summary"
COMPARE = f"{ROOT}/compare"

PAPER_SETUP = (
    "WRN-28-2 on CIFAR-10 (Horoi et al. 2022): 4 sizes x 4 seeds = 16 jumps retrained 40 "
    "epochs (SGD LR 0.001), PHATE of the 640 samples, k=20 graph of the diffusion potential"
)


def train_group(net: str) -> str:
    """Where network ``net``'s population lives."""
    return f"{ROOT}/{net}/train"


def set_group(net: str, kind: str, seed: int) -> str:
    """The group of kind ``jumps`` / ``embed`` / ``topology`` of sample set ``(net, seed)``."""
    return f"{ROOT}/{net}/{kind}/seed{seed}"


def set_tag(net: str, seed: int) -> str:
    """A sample set's name in figure file names: ``good_seed0``."""
    # Figure names are unique over the whole store: the report finds a cited figure by name.
    return f"{net}_seed{seed}"


def core_fingerprint(core: Config) -> dict[str, Any]:
    """The core settings that determine the numbers (device and executor may change)."""
    return config_fingerprint(core)


def step_configs(config_json: str) -> tuple[Config, HoroiConfig]:
    """A step's core config and the study's options, from the run config's JSON."""
    config = RunConfig.model_validate_json(config_json)
    return core_config(config), config.horoi


@dataclass
class SampleSet:
    """The jump-and-retrain samples of one ``(network, base seed)``, as stored.

    Row ``r = m * T + t`` is snapshot ``t`` of jump ``m`` in every field.

    Attributes:
        samples: ``(S, D)`` zarr array, read in blocks only.
        member, seed: ``(S,)`` int64 jump index and direction seed.
        size, epoch: ``(S,)`` float64 jump size and retraining epoch.
        metrics: ``"{split}_{loss,acc}"`` and ``"distance"`` -> ``(S,)`` float64.
        diverged: ``(M,)`` bool.
        jumps, snapshots: ``M`` and ``T``.
    """

    samples: Any
    member: np.ndarray
    seed: np.ndarray
    size: np.ndarray
    epoch: np.ndarray
    metrics: dict[str, np.ndarray]
    diverged: np.ndarray
    jumps: int
    snapshots: int

    @property
    def count(self) -> int:
        """``S = M * T``."""
        return self.jumps * self.snapshots

    def per_jump(self, values: np.ndarray) -> np.ndarray:
        """``(S,)`` -> ``(M, T)``: row ``m`` is jump ``m``'s trajectory."""
        return np.asarray(values).reshape(self.jumps, self.snapshots)


def read_set(store: AtlasStore, net: str, seed: int) -> SampleSet:
    """The sample set of ``(net, seed)`` (1-D columns in memory, the samples left on disk)."""
    group = set_group(net, "jumps", seed)
    attrs = store.attrs(group)
    names = [f"{s}_{m}" for s in ("train", "val", "test") for m in ("loss", "acc")]
    metrics = {
        name: store.read(f"{group}/metrics/{name}").astype(np.float64)
        for name in [*names, "distance"]
        if store.has(f"{group}/metrics/{name}")
    }
    return SampleSet(
        samples=store.array(f"{group}/samples"),
        member=store.read(f"{group}/meta/member"),
        seed=store.read(f"{group}/meta/seed"),
        size=store.read(f"{group}/meta/size"),
        epoch=store.read(f"{group}/meta/epoch"),
        metrics=metrics,
        diverged=store.read(f"{group}/diverged"),
        jumps=int(attrs["members"]),
        snapshots=int(attrs["snapshots"]),
    )


def claim_maker(core: Config, horoi: HoroiConfig) -> ClaimMaker:
    """The study's claim helper: the paper's setup and ours filled in."""
    return ClaimMaker(PAPER_SETUP, setup_line(core, horoi))


def setup_line(core: Config, horoi: HoroiConfig) -> str:
    """What the claims were measured on, in one line."""
    data, model, jump = core.data, core.model, horoi.jump

    def knob(value: Any, default: Any) -> Any:
        return default if value is None else value

    nets = ", ".join(
        f"{n} ({knob(v.n_train, data.n_train) or 'all'} train samples, label noise "
        f"{knob(v.label_noise, data.label_noise):g}, wd "
        f"{knob(v.weight_decay, core.train.weight_decay):g}, "
        f"{knob(v.epochs, core.train.epochs)} epochs)"
        for n, v in horoi.generalization.networks.items()
    )
    n_train = f", {data.n_train} train" if data.n_train else ""
    return (
        f"{data.name}{n_train}, {model.name} (width {model.width or 'default'}), "
        f"{core.train.optimizer} lr {core.train.lr:g}; networks {nets}; {len(jump.sizes)} sizes x "
        f"{len(jump.seeds)} directions retrained {jump.epochs} epochs (LR {jump.lr:g}); "
        f"base seeds {horoi.generalization.seeds}"
    )


def member_of(horoi: HoroiConfig, seed: int) -> int:
    """The member of each network's population trained for base seed ``seed``."""
    return horoi.generalization.seeds.index(seed)


def part_summary(decision: Decision) -> dict[str, Any]:
    """One part of a claim's decision, for ``measured``: its verdict, estimate and interval."""
    e = decision.evidence
    summary: dict[str, Any] = {"verdict": decision.verdict, "estimate": e.estimate, "ci95": e.ci95}
    if e.control is not None:
        summary["control"] = {"estimate": e.control.estimate, "verdict": e.control.verdict}
    return summary


def sets(horoi: HoroiConfig) -> list[tuple[str, int]]:
    """Every sample set ``(network, base seed)``, networks first."""
    return [(n, k) for n in horoi.generalization.networks for k in horoi.generalization.seeds]
