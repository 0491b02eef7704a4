"""The Horoi et al. study (IDA 2022, PAPERS.md part B): the order its steps run in.

:func:`run_horoi` runs every part of the study on two networks that generalise differently
(B4, :mod:`~.networks`), each trained as its own population, and writes everything into the
atlas store::

    horoi/                               fingerprint: the core config and this HoroiConfig
      <net>/train                        the network's population (train stage layout), one
                                         member per base seed
      <net>/jumps/seed<k>                B1: M jumps x T snapshots, streamed (stages.jumps layout)
      <net>/embed/seed<k>                B2: embeddings (S, 2) per method (PHATE at the paper's
                                         and at the connecting knn), both diffusion potentials
                                         (S, S), scores, figures
      <net>/topology/seed<k>             B3: kNN+MST graph, H0/H1 diagrams of the loss ranks,
                                         the shuffled-loss null, summaries, figures
      jump_summary                       claim horoi.jump_retrain, jump curves
      embedding_summary                  claim horoi.phate_vs_linear, scores over all sets
      compare                            claims horoi.topology_summary and
                                         horoi.generalization_separation, comparison figure

``<net>`` is a network name (``good``, ``poor``) and ``k`` a *base seed*: each network is
trained once per base seed (member ``seeds.index(k)``), and each base seed draws its own
``len(jump.seeds)`` filter-normalised directions and retraining orders, so every ``(net, k)``
is an independent sample set of ``S = len(jump.sizes) * len(jump.seeds) * T``
samples (``T = jump.epochs + 1`` with per-epoch snapshots), and the spread of a summary over
``k`` is the yardstick for the difference between the networks. Sample row ``r = m * T + t``
is snapshot ``t`` of jump ``m`` in every array of a set: the samples, their metrics, the
embeddings, the potential and the filtration values stay aligned.

Every step is resumable and fingerprinted (:func:`~lossatlas.stages.output.run_step`, or the
train and jump stages' own units), so a re-run computes nothing and a re-run with another
:class:`HoroiConfig` is refused (:class:`~lossatlas.errors.StoreError`) before anything is
written. The samples are only ever read from the store in blocks (one streamed Gram pass per
set), never held twice.
"""

from __future__ import annotations

from pathlib import Path

from lossatlas.claims import Claim, load_claims
from lossatlas.config import core_config
from lossatlas.context import open_store
from lossatlas.execute import Executor
from lossatlas.stages.output import describe_section, run_step
from lossatlas.studies.config import RunConfig
from lossatlas.studies.horoi._common import (
    COMPARE,
    EMBED_SUMMARY,
    JUMP_SUMMARY,
    ROOT,
    core_fingerprint,
    set_group,
    train_group,
)
from lossatlas.studies.horoi.compare import compare_step
from lossatlas.studies.horoi.config import HoroiConfig
from lossatlas.studies.horoi.embed import embed_step, embedding_summary_step
from lossatlas.studies.horoi.jumps import jump_summary_step, run_jump_sets
from lossatlas.studies.horoi.networks import train_network
from lossatlas.studies.horoi.topology import topology_step

__all__ = ["CITATION", "HOROI_CLAIMS", "HOROI_EXPERIMENTS", "TITLE", "horoi_groups", "run_horoi"]

HOROI_CLAIMS = (
    "horoi.jump_retrain",
    "horoi.phate_vs_linear",
    "horoi.topology_summary",
    "horoi.generalization_separation",
)

TITLE = "Geometry and topology"
CITATION = (
    "Horoi et al. (2022), “Exploring the Geometry and Topology of Neural Network Loss "
    "Landscapes”, IDA 2022: jump-and-retrain trajectories, PHATE and persistent homology."
)

# The study-wide steps, in the order they run: (group, step, description).
_SUMMARY_STEPS = (
    (JUMP_SUMMARY, jump_summary_step, "B1: jump-and-retrain curves"),
    (EMBED_SUMMARY, embedding_summary_step, "B2: embedding scores, all sets"),
    (COMPARE, compare_step, "B3/B4: topology of the two networks compared"),
)
_PAPER = "Horoi et al. 2022"
HOROI_EXPERIMENTS: dict[str, tuple[str, str]] = {
    JUMP_SUMMARY: ("Jump and retrain", f"{_PAPER}: jump-and-retrain trajectories"),
    EMBED_SUMMARY: ("PHATE against linear views", f"{_PAPER}: PHATE embeddings"),
    COMPARE: (
        "Loss topology of well and poorly generalising networks",
        f"{_PAPER}: persistent homology, good vs poor",
    ),
}
"""summary group -> (the experiment's title in the report, the part of the paper it shows).

The paper's figures are not numbered in PAPERS.md, so the part is named by what it shows.
"""
# Page order of the study's groups: its summaries carry the claims, so they come first.
STEPS = [group.rpartition("/")[2] for group, _, _ in _SUMMARY_STEPS]


def horoi_groups(horoi: HoroiConfig) -> dict[str, list[str]]:
    """Every group the study writes, by kind, in the order they are made.

    Kinds: ``train``, ``jumps``, ``embed``, ``topology`` (one group per network, or per
    network and base seed) and ``summary`` (the three study-wide steps).
    """
    nets = list(horoi.generalization.networks)
    seeds = horoi.generalization.seeds
    out: dict[str, list[str]] = {"train": [train_group(n) for n in nets]}
    for kind in ("jumps", "embed", "topology"):
        out[kind] = [set_group(n, kind, k) for n in nets for k in seeds]
    out["summary"] = [JUMP_SUMMARY, EMBED_SUMMARY, COMPARE]
    return out


def run_horoi(
    config: RunConfig,
    out: str | Path,
    *,
    executor: Executor | None = None,
) -> list[Claim]:
    """Run the study (see the module docstring) and return its four claims.

    Args:
        config: the run's config: its core (data, model, train, seed) is the base of both
            networks (:func:`~.networks.config_for_network`), its ``horoi`` section the
            study's options.
        out: the run folder; ``OUT/atlas.zarr`` is created for ``config`` if missing.
        executor: runs the train and jump units (default: local, in this process).

    Returns:
        The claims ``horoi.*`` (:data:`HOROI_CLAIMS`), read back from the store, so a re-run
        that computes nothing returns the same records. Empty when ``horoi.enabled`` is false.
    """
    horoi = config.horoi
    if not horoi.enabled:
        return []
    store = open_store(out, config)
    core = core_config(config)
    core_fp = core_fingerprint(core)
    # The whole study is refused up front if this group was made with other settings.
    store.ensure_group(
        ROOT,
        attrs={"description": "Horoi et al. 2022: jump and retrain, PHATE, loss topology"},
        fingerprint={"core": core_fp, "horoi": horoi.fingerprint()},
    )
    describe_section(store, ROOT, title=TITLE, text=CITATION, order=1, steps=STEPS)
    config_json = config.model_dump_json()
    nets = horoi.generalization.networks

    for name in nets:
        train_network(core, horoi, name, out, executor=executor)
        run_jump_sets(core, horoi, name, out, executor=executor)

    jump_fp = horoi.jump.model_dump(mode="json")
    # The embedding figures are coloured by the loss that filters the topology.
    embed_fp = {**horoi.embed.model_dump(mode="json"), "loss_split": horoi.topology.loss_split}
    topo_fp = horoi.topology.model_dump(mode="json")
    for name, variant in nets.items():
        net_fp = {"core": core_fp, "network": variant.model_dump(mode="json"), "jump": jump_fp}
        for seed in horoi.generalization.seeds:
            key = {"net": name, "seed": seed}
            run_step(
                out,
                set_group(name, "embed", seed),
                {**net_fp, "seed": seed, "embed": embed_fp},
                embed_step,
                config_json,
                key=key,
                attrs={"description": f"B2: embeddings of {name}'s jumps, base seed {seed}"},
            )
            run_step(
                out,
                set_group(name, "topology", seed),
                {**net_fp, "seed": seed, "embed": embed_fp, "topology": topo_fp},
                topology_step,
                config_json,
                key=key,
                attrs={"description": f"B3: loss topology of {name}'s jumps, base seed {seed}"},
            )

    study_fp = {"core": core_fp, "horoi": horoi.fingerprint()}
    for group, step, description in _SUMMARY_STEPS:
        title, paper_figure = HOROI_EXPERIMENTS[group]
        run_step(
            out,
            group,
            study_fp,
            step,
            config_json,
            attrs={"description": description},
            title=title,
            paper_figure=paper_figure,
        )

    wanted = set(HOROI_CLAIMS)
    return [c for c in load_claims(store) if c.id in wanted]
