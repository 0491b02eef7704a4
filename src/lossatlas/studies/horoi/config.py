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

    ``jump`` is :class:`~lossatlas.populations.jump.JumpOptions` (the paper's sizes, seeds and
    retraining, except ``epochs``: 10 by default here, 40 in the paper).
    """

    enabled: bool = True
    jump: JumpOptions = Field(default_factory=_default_jump)
    embed: HoroiEmbedOptions = Field(default_factory=HoroiEmbedOptions)
    topology: HoroiTopologyOptions = Field(default_factory=HoroiTopologyOptions)
    generalization: HoroiGeneralization = Field(default_factory=HoroiGeneralization)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that determine the study's numbers (``enabled`` does not)."""
        return self.model_dump(mode="json", exclude={"enabled"})
