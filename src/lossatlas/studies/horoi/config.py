"""Options of the geometry and topology study (Horoi et al. 2022, PAPERS.md part B).

Every option and default of the study is owned here; jump-and-retrain's own options
(:class:`~lossatlas.populations.jump.JumpOptions`) get the study's defaults.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from lossatlas.analysis.embedding import ALL_METHODS
from lossatlas.config import StrictModel
from lossatlas.populations.jump import JumpOptions

__all__ = [
    "HoroiConfig",
    "HoroiEmbedOptions",
    "HoroiGeneralization",
    "HoroiTopologyOptions",
    "NetworkVariant",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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
        10, ge=1, description="neighbours of every embedding score; clamped below S / 2"
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
    null_draws: int = Field(
        200, ge=20, description="permutation null: draws of the losses shuffled across vertices"
    )


class NetworkVariant(StrictModel):
    """How one network of the comparison is trained, on top of the run's core config.

    Every knob left at ``None`` keeps the run's own setting, so ``NetworkVariant()`` is the
    run's default network.
    """

    label_noise: float | None = Field(
        None, ge=0.0, le=1.0, description="probability a train label is replaced at random"
    )
    weight_decay: float | None = Field(None, ge=0.0)
    augment: bool | None = Field(
        None, description="random crop + flip; the trainer applies it to image data only"
    )
    n_train: int | None = Field(
        None, gt=0, description="train on the first n training samples only (None: the run's)"
    )
    epochs: int | None = Field(None, ge=1, description="training epochs (None: the run's)")


def _default_networks() -> dict[str, NetworkVariant]:
    return {
        # The run's default network, unchanged (quick: the CNN, test accuracy ~0.87).
        "good": NetworkVariant(),
        # A fifth of the training set (800 of MNIST-1D's 4000, val included), no weight decay,
        # trained 4x the epochs, so about as many SGD steps as "good": it fits its training set
        # (train acc 1.0) and generalises clearly worse (test acc ~0.62). Label noise cannot do
        # this with a D = 2,474 CNN: it cannot memorise noisy labels (p = 0.3, 80 epochs: train
        # acc 0.67 on its noisy labels, test 0.72), so it neither fits nor generalises worse.
        "poor": NetworkVariant(weight_decay=0.0, n_train=800, epochs=120),
    }


class HoroiGeneralization(StrictModel):
    """B4: the two networks compared, and the jump base seeds that give the spread."""

    networks: dict[str, NetworkVariant] = Field(
        default_factory=_default_networks,
        description="exactly two networks, the well-generalising one first",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=2,
        description="base seeds: each network is trained once per base seed (member i of its "
        "population for seeds[i]), and each gives its own jump directions and retraining "
        "orders, so every (network, base seed) is an independent replicate",
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
    # The paper's settings, 40 retraining epochs included: on quick a size-1 jump still sits
    # at 10x the optimum's train loss after 10 epochs, and 40 fit the budget.
    return JumpOptions()


class HoroiConfig(StrictModel):
    """Options of the Horoi et al. study (PAPERS.md part B).

    ``jump`` is :class:`~lossatlas.populations.jump.JumpOptions` (the paper's sizes, seeds and
    retraining, 40 epochs).
    """

    enabled: bool = True
    jump: JumpOptions = Field(default_factory=_default_jump)
    embed: HoroiEmbedOptions = Field(default_factory=HoroiEmbedOptions)
    topology: HoroiTopologyOptions = Field(default_factory=HoroiTopologyOptions)
    generalization: HoroiGeneralization = Field(default_factory=HoroiGeneralization)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the study's numbers (``enabled`` does not)."""
        return self.model_dump(mode="json", exclude={"enabled"})
