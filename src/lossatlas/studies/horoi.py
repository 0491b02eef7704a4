"""The Horoi et al. study (IDA 2022, PAPERS.md part B): jump, retrain, embed, and topology.

:func:`run_horoi` runs every part of the study on two networks that generalise differently
(B4), each trained as its own population, and writes everything into the atlas store::

    horoi/                               fingerprint: the core config and this HoroiConfig
      <net>/train                        the network's population (train stage layout), 1 member
      <net>/jumps/seed<k>                B1: M jumps x T snapshots, streamed (probes.jump layout)
      <net>/embed/seed<k>                B2: embeddings (S, 2) per method, PHATE's diffusion
                                         potential (S, S), scores, figures
      <net>/topology/seed<k>             B3: kNN graph, H0/H1 diagrams, summaries, figures
      jump_summary                       claim horoi.jump_retrain, jump curves
      embedding_summary                  claim horoi.phate_vs_linear, scores over all sets
      compare                            claims horoi.topology_summary and
                                         horoi.generalization_separation, comparison figure

``<net>`` is a network name (``good``, ``poor``) and ``k`` a jump *base seed*: each base seed
draws its own ``len(jump.seeds)`` filter-normalised directions and retraining orders, so every
``(net, k)`` is an independent sample set of ``S = len(jump.sizes) * len(jump.seeds) * T``
samples (``T = jump.epochs + 1`` with per-epoch snapshots), and the spread of a summary over
``k`` is the yardstick for the difference between the networks. Sample row ``r = m * T + t``
is snapshot ``t`` of jump ``m`` in every array of a set: the samples, their metrics, the
embeddings, the potential and the filtration values stay aligned.

Every step is resumable and fingerprinted (:func:`~lossatlas.stages.output.run_once`, or the
train and jump stages' own units), so a re-run computes nothing and a re-run with another
:class:`HoroiConfig` is refused (:class:`~lossatlas.errors.StoreError`) before anything is
written. The samples are only ever read from the store in blocks (one streamed Gram pass per
set), never held twice.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from lossatlas.analysis.embedding import ALL_METHODS
from lossatlas.config import Config, StrictModel, core_config
from lossatlas.execute import Executor
from lossatlas.probes.jump import JumpOptions, run_jumps_to_store
from lossatlas.stages.output import run_once
from lossatlas.stages.train import open_store, run_dataset, template_model, train_stage
from lossatlas.studies import _horoi_steps as steps
from lossatlas.studies.claims import Claim, load_claims

__all__ = [
    "HOROI_CLAIMS",
    "HoroiConfig",
    "HoroiEmbedOptions",
    "HoroiGeneralization",
    "HoroiTopologyOptions",
    "NetworkVariant",
    "config_for_network",
    "horoi_groups",
    "run_horoi",
]

HOROI_CLAIMS = (
    "horoi.jump_retrain",
    "horoi.phate_vs_linear",
    "horoi.topology_summary",
    "horoi.generalization_separation",
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# --------------------------------------------------------------------------- options


class HoroiEmbedOptions(StrictModel):
    """B2: which embeddings, PHATE's settings (the paper's by default), and the scores."""

    methods: list[str] = Field(
        default_factory=lambda: ["phate", "pca", "tsne", "random_plane"],
        min_length=1,
        description="embedding methods: phate, pca, tsne, random_plane, umap (extra umap-learn)",
    )
    knn: int = Field(5, ge=1, description="PHATE kNN (paper: 5); clamped to S - 1")
    decay: float = Field(40.0, gt=0.0, description="PHATE alpha-decay (paper: 40)")
    n_pca: int = Field(100, ge=2, description="PCA components fed to PHATE / t-SNE / UMAP")
    knn_dist: Literal["cosine", "euclidean"] = Field(
        "cosine", description="PHATE graph metric (paper: cosine); also t-SNE's and UMAP's"
    )
    score_k: int = Field(
        10, ge=1, description="neighbours of trustworthiness and DEMaP; clamped below S / 2"
    )
    score_metric: Literal["euclidean", "cosine"] = Field(
        "euclidean", description="parameter-space metric the scores compare against"
    )
    random_state: int = Field(0, description="seed of PHATE, t-SNE, UMAP and the plane")

    @field_validator("methods")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        unknown = sorted(set(values) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown embedding methods {unknown}; choose from {ALL_METHODS}")
        if len(set(values)) != len(values):
            raise ValueError("embedding methods must not repeat")
        return values


class HoroiTopologyOptions(StrictModel):
    """B3: the kNN graph of the samples and the sublevel filtration of their loss."""

    k: int = Field(20, ge=1, description="graph neighbours (paper: 20); clamped to S - 1")
    max_dimension: int = Field(2, ge=1, description="flag complex dimension (2: H1 can die)")
    graph_from: Literal["potential", "embedding"] = Field(
        "potential",
        description="rows the graph is built on: PHATE's diffusion potential (paper) or PHATE's "
        "2-D embedding",
    )
    loss_split: Literal["train", "val", "test"] = Field(
        "test", description="whose loss filters the graph (paper: test)"
    )


class NetworkVariant(StrictModel):
    """How one network of the comparison is trained, on top of the run's core config."""

    label_noise: float = Field(
        0.0, ge=0.0, le=1.0, description="probability a train label is replaced at random"
    )
    weight_decay: float = Field(0.0, ge=0.0)
    augment: bool = Field(
        False, description="random crop + flip; the trainer applies it to image data only"
    )
    epochs: int | None = Field(None, ge=1, description="training epochs (None: the run's)")


def _default_networks() -> dict[str, NetworkVariant]:
    return {
        # Clean labels and the usual regulariser: the network that should generalise well.
        "good": NetworkVariant(label_noise=0.0, weight_decay=1e-4, augment=True),
        # 30% of the training labels resampled uniformly, no weight decay: on MNIST-1D this
        # lowers test accuracy clearly while the network still fits its training set.
        "poor": NetworkVariant(label_noise=0.3, weight_decay=0.0, augment=False),
    }


class HoroiGeneralization(StrictModel):
    """B4: the two networks compared, and the jump base seeds that give the spread."""

    networks: dict[str, NetworkVariant] = Field(
        default_factory=_default_networks,
        description="exactly two networks, the well-generalising one first",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1],
        min_length=2,
        description="jump base seeds: each gives its own directions and retraining orders, so "
        "a summary's spread over them measures the variation within one network",
    )
    separation_key: str = Field(
        "h0_total_persistence",
        pattern=r"^h[01]_(total_persistence|p[12]_norm|pinf_norm|entropy|n_features|n_finite"
        r"|n_infinite)$",
        description="the topological summary the separation claim tests",
    )

    @field_validator("networks")
    @classmethod
    def _two_named(cls, value: dict[str, NetworkVariant]) -> dict[str, NetworkVariant]:
        if len(value) != 2:
            raise ValueError(f"exactly two networks are compared, got {len(value)}")
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"network name {name!r}: use letters, digits, '_' or '-'")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(s < 0 for s in value):
            raise ValueError("jump base seeds must be distinct and non-negative")
        return value


def _default_jump() -> JumpOptions:
    # The paper retrains 40 epochs; 10 keeps the default run on a laptop CPU in minutes while
    # the trajectories already leave the jump point.
    return JumpOptions(epochs=10)


class HoroiConfig(StrictModel):
    """Options of the Horoi et al. study (PAPERS.md part B).

    ``jump`` is :class:`~lossatlas.probes.jump.JumpOptions` (the paper's sizes, seeds and
    retraining, except ``epochs``: 10 by default here, 40 in the paper).
    """

    enabled: bool = True
    jump: JumpOptions = Field(default_factory=_default_jump)
    embed: HoroiEmbedOptions = Field(default_factory=HoroiEmbedOptions)
    topology: HoroiTopologyOptions = Field(default_factory=HoroiTopologyOptions)
    generalization: HoroiGeneralization = Field(default_factory=HoroiGeneralization)

    @classmethod
    def smoke(cls) -> HoroiConfig:
        """Tiny values for tests: 4 sizes x 2 directions x 3 snapshots = 24 samples a set."""
        return cls(
            jump=JumpOptions(
                sizes=[0.25, 0.5, 0.75, 1.0],
                seeds=[0, 1],
                epochs=2,
                batch_size=64,
                jumps_per_unit=8,
            ),
        )

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the study's numbers (``enabled`` does not)."""
        return self.model_dump(mode="json", exclude={"enabled"})


# --------------------------------------------------------------------------- networks


def config_for_network(base: Config, variant: NetworkVariant) -> Config:
    """The training config of one network: ``base`` with the variant's data and training knobs.

    One member (the study jumps from one optimum per network), the variant's label noise,
    weight decay, augmentation (the trainer ignores it for non-image data) and epochs. The
    seed and everything else stay ``base``'s, so both networks start from the same weights and
    see the same data order, and only the knobs differ.
    """
    core = core_config(base)
    return core.model_copy(
        update={
            "data": core.data.model_copy(
                update={"label_noise": variant.label_noise, "augment": variant.augment}
            ),
            "train": core.train.model_copy(
                update={
                    "members": 1,
                    "weight_decay": variant.weight_decay,
                    "epochs": core.train.epochs if variant.epochs is None else variant.epochs,
                    "snapshot_every": 0,
                }
            ),
        }
    )


def horoi_groups(horoi: HoroiConfig) -> dict[str, list[str]]:
    """Every group the study writes, by kind, in the order they are made.

    Kinds: ``train``, ``jumps``, ``embed``, ``topology`` (one group per network, or per
    network and base seed) and ``summary`` (the three study-wide steps).
    """
    nets = list(horoi.generalization.networks)
    seeds = horoi.generalization.seeds
    out: dict[str, list[str]] = {"train": [steps.train_group(n) for n in nets]}
    for kind in ("jumps", "embed", "topology"):
        out[kind] = [steps.set_group(n, kind, k) for n in nets for k in seeds]
    out["summary"] = [steps.JUMP_SUMMARY, steps.EMBED_SUMMARY, steps.COMPARE]
    return out


# --------------------------------------------------------------------------- the study


def run_horoi(
    config: Config,
    horoi: HoroiConfig,
    out: str | Path,
    *,
    executor: Executor | None = None,
) -> list[Claim]:
    """Run the study (see the module docstring) and return its four claims.

    Args:
        config: the run's config; its core (data, model, train, seed) is the base of both
            networks (:func:`config_for_network`).
        horoi: the study's options.
        out: the run folder; ``OUT/atlas.zarr`` is created for ``config`` if missing.
        executor: runs the train and jump units (default: local, in this process).

    Returns:
        The claims ``horoi.*`` (:data:`HOROI_CLAIMS`), read back from the store, so a re-run
        that computes nothing returns the same records. Empty when ``horoi.enabled`` is false.
    """
    if not horoi.enabled:
        return []
    store = open_store(out, config)
    core = core_config(config)
    core_fp = steps.core_fingerprint(core)
    # The whole study is refused up front if this group was made with other settings.
    store.ensure_group(
        steps.ROOT,
        attrs={"description": "Horoi et al. 2022: jump and retrain, PHATE, loss topology"},
        fingerprint={"core": core_fp, "horoi": horoi.fingerprint()},
    )
    config_json, horoi_json = core.model_dump_json(), horoi.model_dump_json()
    nets = horoi.generalization.networks

    for name, variant in nets.items():
        net_config = config_for_network(core, variant)
        train_stage(net_config, out, executor=executor, group=steps.train_group(name))
        dataset = run_dataset(net_config)
        model = template_model(net_config, dataset)
        center, buffers = steps.trained_point(store, steps.train_group(name), model)
        for seed in horoi.generalization.seeds:
            # The jumps retrain on the network's own (possibly noisy) training set; their
            # test metrics use the clean test labels.
            run_jumps_to_store(
                store,
                steps.set_group(name, "jumps", seed),
                model,
                dataset,
                center,
                horoi.jump,
                buffers,
                base_seed=seed,
                executor=executor,
            )

    jump_fp = horoi.jump.model_dump(mode="json")
    # The embedding figures are coloured by the loss that filters the topology.
    embed_fp = {**horoi.embed.model_dump(mode="json"), "loss_split": horoi.topology.loss_split}
    topo_fp = horoi.topology.model_dump(mode="json")
    for name, variant in nets.items():
        net_fp = {"core": core_fp, "network": variant.model_dump(mode="json"), "jump": jump_fp}
        for seed in horoi.generalization.seeds:
            args = (str(out), name, seed, config_json, horoi_json)
            run_once(
                out,
                steps.set_group(name, "embed", seed),
                {**net_fp, "seed": seed, "embed": embed_fp},
                steps.embed_step,
                *args,
                attrs={"description": f"B2: embeddings of {name}'s jumps, base seed {seed}"},
            )
            run_once(
                out,
                steps.set_group(name, "topology", seed),
                {**net_fp, "seed": seed, "embed": embed_fp, "topology": topo_fp},
                steps.topology_step,
                *args,
                attrs={"description": f"B3: loss topology of {name}'s jumps, base seed {seed}"},
            )

    study_fp = {"core": core_fp, "horoi": horoi.fingerprint()}
    for group, step, description in (
        (steps.JUMP_SUMMARY, steps.jump_summary_step, "B1: jump-and-retrain curves"),
        (steps.EMBED_SUMMARY, steps.embedding_summary_step, "B2: embedding scores, all sets"),
        (steps.COMPARE, steps.compare_step, "B3/B4: topology of the two networks compared"),
    ):
        run_once(
            out,
            group,
            study_fp,
            step,
            str(out),
            config_json,
            horoi_json,
            attrs={"description": description},
        )

    wanted = set(HOROI_CLAIMS)
    return [c for c in load_claims(store) if c.id in wanted]
