"""The steps of the Horoi et al. study (see :mod:`lossatlas.studies.horoi` for the layout).

Each ``*_step`` function reads what earlier steps stored, computes, and returns a
:class:`~lossatlas.stages.output.StageOutput`; :func:`~lossatlas.stages.output.run_once` writes
it and marks the group complete. Arguments are plain strings and ints (the run folder, the
configs as JSON), so a step can run on any executor.

Every claim's criterion is fixed here, in code, before anything is measured; a claim that does
not hold on our setup is reported with its numbers.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lossatlas.analysis.embedding import (
    PHATEEmbedding,
    embed_all,
    score_embeddings,
    streamed_gram,
)
from lossatlas.analysis.topology import LossTopology, compare_networks
from lossatlas.config import Config
from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png, plotly_to_html
from lossatlas.plots.embedding import (
    plot_embedding_grid,
    plot_embedding_interactive,
    plot_embedding_scores,
)
from lossatlas.plots.jump import plot_jump_distance, plot_jump_loss
from lossatlas.plots.topology import (
    plot_barcode,
    plot_persistence_diagram,
    plot_topology_comparison,
)
from lossatlas.seeding import make_generator
from lossatlas.stages.output import StageOutput
from lossatlas.stages.train import config_fingerprint, run_dataset, template_model
from lossatlas.store import AtlasStore
from lossatlas.studies.claims import Claim

__all__ = [
    "COMPARE",
    "EMBED_SUMMARY",
    "JUMP_SUMMARY",
    "ROOT",
    "SampleSet",
    "compare_step",
    "core_fingerprint",
    "embed_step",
    "embedding_summary_step",
    "jump_summary_step",
    "read_set",
    "set_group",
    "topology_step",
    "train_group",
    "trained_point",
]

if TYPE_CHECKING:  # the study module imports this one at import time
    from lossatlas.studies.horoi import HoroiConfig

ROOT = "horoi"
JUMP_SUMMARY = f"{ROOT}/jump_summary"
EMBED_SUMMARY = f"{ROOT}/embedding_summary"
COMPARE = f"{ROOT}/compare"

PAPER_SETUP = (
    "WRN-28-2 on CIFAR-10 (Horoi et al. 2022): 4 sizes x 4 seeds = 16 jumps retrained 40 "
    "epochs (SGD LR 0.001), PHATE of the 640 samples, k=20 graph of the diffusion potential"
)
_LINEAR = ("pca", "random_plane")
# PHATE's warning when its kNN graph falls apart: "Graph is disconnected with 14 connected ..."
_COMPONENTS = re.compile(r"disconnected with (\d+) connected components")
_SUMMARY_KEYS = ("total_persistence", "entropy", "n_features", "pinf_norm")


# --------------------------------------------------------------------------- names and inputs


def train_group(net: str) -> str:
    """Where network ``net``'s population lives."""
    return f"{ROOT}/{net}/train"


def set_group(net: str, kind: str, seed: int) -> str:
    """The group of kind ``jumps`` / ``embed`` / ``topology`` of sample set ``(net, seed)``."""
    return f"{ROOT}/{net}/{kind}/seed{seed}"


def _tag(net: str, seed: int) -> str:
    # Figure names are unique over the whole store: the report finds a cited figure by name.
    return f"{net}_seed{seed}"


def core_fingerprint(core: Config) -> dict[str, Any]:
    """The core settings that determine the numbers (device and executor may change)."""
    return config_fingerprint(core)


def _configs(config_json: str, horoi_json: str) -> tuple[Config, HoroiConfig]:
    from lossatlas.studies.horoi import HoroiConfig

    return Config.model_validate_json(config_json), HoroiConfig.model_validate_json(horoi_json)


def _network(core: Config, horoi: HoroiConfig, net: str) -> tuple[Config, Any, nn.Module]:
    """Network ``net``'s training config, its dataset and its template model."""
    from lossatlas.studies.horoi import config_for_network

    net_config = config_for_network(core, horoi.generalization.networks[net])
    dataset = run_dataset(net_config)
    return net_config, dataset, template_model(net_config, dataset)


def trained_point(
    store: AtlasStore, group: str, model: nn.Module
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Member 0 of the population in ``group``: its parameters ``(D,)`` and buffers.

    On the model's device and dtype. Raises ``ValueError`` when the member diverged or its
    parameters are not finished.
    """
    like = next(model.parameters())
    if store.read(f"{group}/diverged", (slice(0, 1),))[0]:
        raise ValueError(f"the network in {group} diverged in training; lower train.lr")
    params = torch.as_tensor(store.read(f"{group}/params", (0,)))
    if not torch.isfinite(params).all():
        raise ValueError(f"the network in {group} has no finished parameters")
    buffers = {
        name: torch.as_tensor(store.read(f"{group}/buffers/{name}", (0,))).to(like.device)
        for name, _ in model.named_buffers()
    }
    return params.to(device=like.device, dtype=like.dtype), buffers


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


def _setup(core: Config, horoi: HoroiConfig) -> str:
    data, model, jump = core.data, core.model, horoi.jump
    nets = ", ".join(
        f"{n} (label noise {v.label_noise:g}, wd {v.weight_decay:g}, "
        f"{v.epochs or core.train.epochs} epochs)"
        for n, v in horoi.generalization.networks.items()
    )
    n_train = f", {data.n_train} train" if data.n_train else ""
    return (
        f"{data.name}{n_train}, {model.name} (width {model.width or 'default'}), "
        f"{core.train.optimizer} lr {core.train.lr:g}; networks {nets}; {len(jump.sizes)} sizes x "
        f"{len(jump.seeds)} directions retrained {jump.epochs} epochs (LR {jump.lr:g}); "
        f"base seeds {horoi.generalization.seeds}"
    )


def _claim(
    cid: str,
    statement: str,
    paper_value: Any,
    measured: dict[str, Any],
    holds: bool | None,
    setup: str,
    criterion: str,
    notes: str = "",
    figures: Sequence[str] = (),
) -> Claim:
    return Claim(
        id=cid,
        statement=statement,
        paper_value=paper_value,
        paper_setup=PAPER_SETUP,
        measured=measured,
        holds=holds,
        setup=setup,
        criterion=criterion,
        notes=notes,
        figures=list(figures),
    )


def _sets(horoi: HoroiConfig) -> list[tuple[str, int]]:
    return [(n, k) for n in horoi.generalization.networks for k in horoi.generalization.seeds]


# --------------------------------------------------------------------------- B2: embeddings


def embed_step(out: str, net: str, seed: int, config_json: str, horoi_json: str) -> StageOutput:
    """Embed one sample set with every method, from ONE streamed pass over its samples.

    The pass builds the ``S x S`` Gram matrix and the projections on the two plane directions
    (:func:`~lossatlas.analysis.embedding.streamed_gram`); PHATE, PCA, t-SNE, UMAP, the random
    plane and all the scores come from it, so the ``(S, D)`` samples are never in memory.

    Stores ``embeddings/<method>`` ``(S, 2)``, PHATE's ``diff_potential`` ``(S, S)`` (the
    topology step's input), the scores, and the figures.
    """
    core, horoi = _configs(config_json, horoi_json)
    opts = horoi.embed
    store = AtlasStore.open(out, create=False)
    data = read_set(store, net, seed)
    if data.diverged.any():
        raise ValueError(
            f"{int(data.diverged.sum())} jumps of {set_group(net, 'jumps', seed)} diverged; "
            "lower jump.lr"
        )
    n = data.count
    notes = []
    # PHATE needs more samples than neighbours, trustworthiness k < S / 2.
    knn = min(opts.knn, n - 1)
    score_k = min(opts.score_k, (n - 1) // 2)
    if knn != opts.knn:
        notes.append(f"PHATE knn clamped to {knn} = S - 1")
    if score_k != opts.score_k:
        notes.append(f"score k clamped to {score_k} (< S / 2)")

    _, _, model = _network(core, horoi, net)
    center, _ = trained_point(store, train_group(net), model)
    # Li et al.'s plane: two filter-normalised Gaussian directions around the optimum.
    space = ParamSpace(model)
    generator = make_generator(opts.random_state, "horoi", "plane", seed)
    plane = space.random_direction(generator, kind="filter", center=center, count=2)
    plane_np = plane.detach().double().cpu().numpy()
    center_np = center.detach().double().cpu().numpy()

    gram = streamed_gram(data.samples, vectors=plane_np)
    embeddings: dict[str, np.ndarray] = {}
    potential = None
    phate_t = None
    components = 1
    if "phate" in opts.methods:
        phate = PHATEEmbedding(
            knn=knn,
            decay=opts.decay,
            n_pca=opts.n_pca,
            knn_dist=opts.knn_dist,
            mds_dist=opts.knn_dist,
            random_state=opts.random_state,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            phate.fit(gram)
        for item in caught:
            # Rays that retrain far apart give a graph in several pieces: a property of the
            # samples worth recording with the result, not a failure.
            found = _COMPONENTS.search(str(item.message))
            if found:
                components = int(found.group(1))
                notes.append(f"PHATE's kNN graph has {components} connected components")
            else:
                warnings.warn_explicit(
                    item.message, item.category, item.filename, item.lineno, source=item.source
                )
        embeddings["phate"], potential, phate_t = phate.embedding_, phate.diff_potential_, phate.t_
    others = [m for m in opts.methods if m != "phate"]
    if others:
        embeddings.update(
            embed_all(
                gram,
                methods=others,
                center=center_np,
                random_state=opts.random_state,
                plane_directions=plane_np,
                metric=opts.knn_dist,
                n_pca=opts.n_pca,
            )
        )
    embeddings = {m: embeddings[m] for m in opts.methods}  # the configured order
    scores = score_embeddings(
        gram,
        embeddings,
        trajectory_ids=data.member,
        order=data.epoch,
        k=score_k,
        metric=opts.score_metric,
    )

    split = horoi.topology.loss_split
    loss = data.metrics[f"{split}_loss"]
    tag = _tag(net, seed)
    where = f"{net} network, base seed {seed}"
    common = {"trajectory_ids": data.member, "order": data.epoch}
    figures = {
        f"embedding_loss_{tag}.png": plot_embedding_grid(
            embeddings, loss, label=f"{split} loss", log=True, title=where, **common
        ),
        f"embedding_size_{tag}.png": plot_embedding_grid(
            embeddings, data.size, label="jump size", categorical=True, title=where, **common
        ),
        f"embedding_seed_{tag}.png": plot_embedding_grid(
            embeddings, data.seed, label="direction seed", categorical=True, title=where, **common
        ),
        f"embedding_scores_{tag}.png": plot_embedding_scores(
            scores, title=f"Embedding quality, {where}"
        ),
    }
    blobs = {name: figure_to_png(fig) for name, fig in figures.items()}
    hover = {
        "jump size": data.size,
        "direction seed": data.seed,
        "epoch": data.epoch,
        f"{split} loss": np.round(loss, 5),
    }
    for method, coords in embeddings.items():
        fig = plot_embedding_interactive(
            coords, hover=hover, color=f"{split} loss", method=method, **common
        )
        blobs[f"embedding_{method}_{tag}.html"] = plotly_to_html(fig)

    arrays = {f"embeddings/{m}": c for m, c in embeddings.items()}
    if potential is not None:
        arrays["diff_potential"] = potential
    return StageOutput(
        arrays=arrays,
        scalars={
            "samples": n,
            "scores": scores,
            "phate_knn": knn,
            "phate_t": phate_t,
            "phate_components": components if "phate" in opts.methods else None,
            "score_k": score_k,
            "score_metric": opts.score_metric,
            "notes": notes,
        },
        figures=blobs,
    )


def embedding_summary_step(out: str, config_json: str, horoi_json: str) -> StageOutput:
    """Scores of every method over all sample sets, and the claim ``horoi.phate_vs_linear``."""
    core, horoi = _configs(config_json, horoi_json)
    store = AtlasStore.open(out, create=False)
    results = {
        f"{n}/seed{k}": store.attrs(set_group(n, "embed", k))["result"] for n, k in _sets(horoi)
    }
    per_set = {name: result["scores"] for name, result in results.items()}
    components = {name: r.get("phate_components") for name, r in results.items()}
    split_graphs = {name: c for name, c in components.items() if c and c > 1}
    methods = list(horoi.embed.methods)
    names = sorted({s for rows in per_set.values() for row in rows.values() for s in row})
    mean: dict[str, dict[str, float]] = {}
    spread: dict[str, dict[str, float]] = {}
    for m in methods:
        mean[m], spread[m] = {}, {}
        for s in names:
            values = np.array([_num(rows[m].get(s)) for rows in per_set.values()], dtype=float)
            finite = values[np.isfinite(values)]
            mean[m][s] = float(finite.mean()) if finite.size else math.nan
            spread[m][s] = float(finite.std()) if finite.size else math.nan

    # Criterion, fixed before measuring: PHATE's mean trajectory preservation is at least that
    # of every linear view present.
    key = "trajectory_preservation"
    linear = [m for m in _LINEAR if m in methods]
    holds: bool | None = None
    if "phate" in methods and linear:
        phate = mean["phate"][key]
        rivals = [mean[m][key] for m in linear]
        if math.isfinite(phate) and all(math.isfinite(r) for r in rivals):
            holds = bool(phate >= max(rivals))
    figure = f"embedding_scores_{ROOT}.png"
    claim = _claim(
        "horoi.phate_vs_linear",
        "PHATE embeddings of the jump-and-retrain samples show the retraining trajectories "
        "better than linear views (PCA, the Li et al. random plane).",
        "qualitative: PHATE separates the trajectories and keeps their progression, which "
        "PCA and random-plane views flatten (no score reported)",
        {
            "mean": mean,
            "std_over_sets": spread,
            "sets": len(per_set),
            "phate_graph_components": components,
            "per_set": per_set,
        },
        holds,
        _setup(core, horoi),
        "holds if PHATE's trajectory-preservation score (Spearman rho between embedding "
        "distance and along-trajectory parameter distance within each jump's trajectory, "
        "averaged over trajectories, then over all (network, base seed) sample sets) is >= "
        f"that of every linear view present ({', '.join(linear) or 'none'})",
        notes=f"scores against {horoi.embed.score_metric} parameter distances; "
        "trustworthiness and DEMaP are reported beside it (1 is best for all three)"
        + (
            f"; PHATE's kNN graph (knn={horoi.embed.knn}, decay={horoi.embed.decay:g}) fell "
            f"apart in {len(split_graphs)} of {len(results)} sets (components: {split_graphs}), "
            "so PHATE places those pieces relative to each other arbitrarily"
            if split_graphs
            else ""
        ),
        figures=[figure],
    )
    fig = plot_embedding_scores(mean, title="Embedding quality, mean over sample sets")
    return StageOutput(
        scalars={"mean": mean, "std_over_sets": spread},
        figures={figure: figure_to_png(fig)},
        claims=[claim],
    )


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------- B3: topology


def topology_step(out: str, net: str, seed: int, config_json: str, horoi_json: str) -> StageOutput:
    """Persistent homology of the loss on the kNN graph of one sample set.

    The graph joins each sample to its ``k`` nearest by PHATE's diffusion potential (rows of
    the stored ``(S, S)`` potential, Euclidean: PHATE's potential distance) or by the PHATE
    embedding; vertex ``i`` enters at sample ``i``'s loss, read from the same rows, so the
    loss is never shifted against its sample.
    """
    _, horoi = _configs(config_json, horoi_json)
    opts = horoi.topology
    store = AtlasStore.open(out, create=False)
    data = read_set(store, net, seed)
    embed = set_group(net, "embed", seed)
    if opts.graph_from == "potential":
        if not store.has(f"{embed}/diff_potential"):
            raise ValueError("topology.graph_from='potential' needs 'phate' in embed.methods")
        rows = store.read(f"{embed}/diff_potential")
    else:
        if not store.has(f"{embed}/embeddings/phate"):
            raise ValueError("topology.graph_from='embedding' needs 'phate' in embed.methods")
        rows = store.read(f"{embed}/embeddings/phate")
    losses = data.metrics[f"{opts.loss_split}_loss"]
    n = data.count
    k = min(opts.k, n - 1)
    topo = LossTopology(k=k, max_dimension=opts.max_dimension, graph_from=opts.graph_from)
    topo.fit(rows, losses)
    tag = _tag(net, seed)
    where = f"{net} network, base seed {seed}"
    figures = {
        f"barcode_{tag}.png": plot_barcode(topo.diagrams_, cap=topo.cap_, title=where),
        f"diagram_{tag}.png": plot_persistence_diagram(topo.diagrams_, cap=topo.cap_, title=where),
    }
    arrays: dict[str, np.ndarray] = {f"diagrams/h{d}": v for d, v in topo.diagrams_.items()}
    arrays["edges"] = topo.edges_
    return StageOutput(
        arrays=arrays,
        scalars={
            "summary": topo.summary_,
            "k": k,
            "cap": topo.cap_,
            "edges": int(topo.edges_.shape[0]),
            "samples": n,
            "notes": [] if k == opts.k else [f"k clamped to {k} = S - 1"],
        },
        figures={name: figure_to_png(fig) for name, fig in figures.items()},
    )


# --------------------------------------------------------------------------- B1: jump curves


def jump_summary_step(out: str, config_json: str, horoi_json: str) -> StageOutput:
    """Jump curves of every sample set and the claim ``horoi.jump_retrain``."""
    core, horoi = _configs(config_json, horoi_json)
    store = AtlasStore.open(out, create=False)
    split = horoi.topology.loss_split
    figures: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    # net -> size -> lists over (base seed, direction) of per-jump values
    pooled: dict[str, dict[float, dict[str, list[float]]]] = {}
    for net, seed in _sets(horoi):
        data = read_set(store, net, seed)
        counts[f"{net}/seed{seed}"] = data.count
        t = data.snapshots
        epoch = data.epoch[:t]
        size = data.size[::t]
        curves = {
            s: data.per_jump(data.metrics[f"{s}_loss"])
            for s in ("train", "val", "test")
            if f"{s}_loss" in data.metrics
        }
        distance = data.per_jump(data.metrics["distance"])
        loss = data.per_jump(data.metrics[f"{split}_loss"])
        acc = data.per_jump(data.metrics[f"{split}_acc"])
        for m, a in enumerate(size):
            row = pooled.setdefault(net, {}).setdefault(float(a), {})
            for name, values in (
                ("jump_loss", loss[m, 0]),
                ("final_loss", loss[m, -1]),
                ("final_acc", acc[m, -1]),
                ("final_distance", distance[m, -1]),
            ):
                row.setdefault(name, []).append(float(values))
        tag, where = _tag(net, seed), f"{net} network, base seed {seed}"
        figures[f"jump_loss_{tag}.png"] = figure_to_png(
            plot_jump_loss(epoch, curves, size, title=f"Loss after the jump, {where}")
        )
        figures[f"jump_distance_{tag}.png"] = figure_to_png(
            plot_jump_distance(epoch, distance, size, title=f"Distance from θ*, {where}")
        )

    by_size = {
        net: {
            f"{a:g}": {name: float(np.nanmean(v)) for name, v in row.items()}
            for a, row in sorted(sizes.items())
        }
        for net, sizes in pooled.items()
    }
    # Criterion, fixed before measuring: for every network, the mean distance from θ* after
    # the last retraining epoch increases strictly with the jump size.
    increasing = {
        net: bool(np.all(np.diff([row["final_distance"] for row in rows.values()]) > 0))
        for net, rows in by_size.items()
    }
    total = int(sum(counts.values()))
    expected: int | None = None
    if horoi.jump.snapshot_unit == "epoch":
        # Counted from the options, independently of what the jump stage recorded.
        snapshots = horoi.jump.epochs // horoi.jump.snapshot_every + 1
        expected = len(_sets(horoi)) * horoi.jump.members * snapshots
    measured = {
        "samples": total,
        "expected_samples": expected,
        "samples_per_set": counts,
        "per_network_by_size": by_size,
        "distance_increases_with_size": increasing,
        "loss_split": split,
    }
    cited = [name for name in figures if name.startswith("jump_") and "seed" in name][:2]
    claim = _claim(
        "horoi.jump_retrain",
        "Jumps from an optimum along filter-normalised random directions, retrained with a "
        "small constant LR, give trajectories whose loss and distance depend on the jump size: "
        "larger jumps start higher and end farther from the optimum.",
        "qualitative: 16 jumps (sizes 0.25-1.0 x 4 seeds), 40 epochs each, 640 samples; "
        "larger jumps end farther away",
        measured,
        all(increasing.values()) and (expected is None or total == expected),
        _setup(core, horoi),
        "holds if every network's mean L2 distance from the optimum after the last retraining "
        "epoch (over directions and base seeds) strictly increases with the jump size, and the "
        "store holds networks x base seeds x jumps x (epochs + 1) samples",
        notes=f"jump_loss / final_loss / final_acc on the {split} split: right after the jump "
        "and after retraining; retraining on each network's own training set",
        figures=cited,
    )
    return StageOutput(
        scalars={"samples": total, "per_network_by_size": by_size},
        figures=figures,
        claims=[claim],
    )


# --------------------------------------------------------------------------- B4: comparison


def _network_metrics(store: AtlasStore, net: str) -> dict[str, float]:
    group = train_group(net)
    out = {}
    for name in ("train_acc", "test_acc", "test_loss"):
        if store.has(f"{group}/history/{name}"):
            out[name] = float(store.read(f"{group}/history/{name}")[0, -1])
    return out


def _spread(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "range": float(np.ptp(arr)),
    }


def _pair_distances(
    names: Sequence[str], nets: Sequence[str], matrix: np.ndarray
) -> dict[str, list[float]]:
    """Off-diagonal entries of a set-by-set matrix, split into within / between networks."""
    within, between = [], []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            (within if nets[i] == nets[j] else between).append(float(matrix[i, j]))
    return {"within": within, "between": between}


def compare_step(out: str, config_json: str, horoi_json: str) -> StageOutput:
    """Summaries per network, distances between all sample sets, and the B3/B4 claims."""
    core, horoi = _configs(config_json, horoi_json)
    store = AtlasStore.open(out, create=False)
    nets = list(horoi.generalization.networks)
    seeds = horoi.generalization.seeds
    diagrams: dict[str, dict[int, np.ndarray]] = {}
    summaries: dict[str, dict[str, float]] = {}
    owner: list[str] = []
    caps = []
    graph_k: dict[str, int] = {}
    for net, seed in _sets(horoi):
        group = set_group(net, "topology", seed)
        result = store.attrs(group)["result"]
        name = f"{net} s{seed}"
        diagrams[name] = {
            d: store.read(f"{group}/diagrams/h{d}")
            for d in (0, 1)
            if store.has(f"{group}/diagrams/h{d}")
        }
        summaries[name] = {k: float(v) for k, v in result["summary"].items()}
        graph_k[name] = int(result["k"])
        owner.append(net)
        caps.append(float(result["cap"]))
    cap = max(caps)
    # Distances on one loss scale: infinite bars end at the largest loss of all the sets.
    compared = compare_networks(diagrams, cap=cap)
    names = compared["names"]

    per_network: dict[str, dict[str, dict[str, float]]] = {}
    for net in nets:
        rows = [summaries[f"{net} s{k}"] for k in seeds]
        keys = [k for k in rows[0] if any(k.endswith(f"_{s}") for s in _SUMMARY_KEYS)]
        per_network[net] = {key: _spread([r[key] for r in rows]) for key in keys}
    accuracy = {net: _network_metrics(store, net) for net in nets}

    # Criterion, fixed before measuring: the difference of the two networks' means (over base
    # seeds) of the separation key exceeds the larger of their min-max ranges over base seeds.
    key = horoi.generalization.separation_key
    good, poor = nets
    if key not in summaries[f"{good} s{seeds[0]}"]:
        raise ValueError(f"generalization.separation_key {key!r} is not a summary of the sets")
    tested = {net: _spread([summaries[f"{net} s{k}"][key] for k in seeds]) for net in nets}
    difference = tested[good]["mean"] - tested[poor]["mean"]
    within_spread = max(tested[good]["range"], tested[poor]["range"])
    separated = bool(abs(difference) > within_spread)
    bottleneck = {
        f"h{d}": _pair_distances(names, owner, compared["bottleneck"][d]) for d in compared["dims"]
    }
    bottleneck_means = {
        dim: {part: float(np.mean(v)) if v else math.nan for part, v in parts.items()}
        for dim, parts in bottleneck.items()
    }
    acc_gap = accuracy[good].get("test_acc", math.nan) - accuracy[poor].get("test_acc", math.nan)
    setup = _setup(core, horoi)
    figure = "topology_comparison.png"
    fig = plot_topology_comparison(
        diagrams, summaries=summaries, cap=cap, title="Loss topology, networks x base seeds"
    )

    topo_claim = _claim(
        "horoi.topology_summary",
        "Persistent homology of the test-loss sublevel filtration on the kNN graph of PHATE's "
        "diffusion potential summarises each network's sampled landscape (H0: basins, H1: "
        "loops).",
        "qualitative (no numbers): total persistence, p-norms, persistent entropy and feature "
        "counts of H0 and H1",
        {"per_network": per_network, "per_set": summaries, "graph_k": graph_k, "cap": cap},
        None,
        setup,
        "descriptive, no paper number to compare: per network, the mean and min-max over "
        f"base seeds {seeds} of the H0/H1 summaries (infinite bars capped at each set's "
        "largest loss)",
        notes=f"graph k={horoi.topology.k} (clamped to S - 1 when smaller), from "
        f"{horoi.topology.graph_from}; flag complex up to dimension "
        f"{horoi.topology.max_dimension}",
        figures=[figure, f"barcode_{_tag(good, seeds[0])}.png"],
    )
    sep_claim = _claim(
        "horoi.generalization_separation",
        "The topological summaries of the jump-and-retrain samples separate a well-"
        "generalising network from a poorly generalising one.",
        "qualitative (B4): summaries and embeddings differ between well- and poorly-"
        "generalising networks; how the poor ones were made is not stated",
        {
            "key": key,
            "difference": difference,
            "within_network_range": within_spread,
            "ratio": abs(difference) / within_spread if within_spread > 0 else math.inf,
            "per_network": tested,
            "bottleneck": bottleneck,
            "bottleneck_mean": bottleneck_means,
            "network_metrics": accuracy,
            "test_acc_gap": acc_gap,
        },
        separated,
        setup,
        f"holds if |mean({key}) of {good} - mean({key}) of {poor}| (means over base seeds "
        f"{seeds}) exceeds the larger of the two networks' min-max ranges of {key} over "
        "those seeds; the H0/H1 bottleneck distances between the networks' sets and within "
        "each network's sets are reported beside it",
        notes=(
            f"{good} test acc {accuracy[good].get('test_acc', math.nan):.3f}, {poor} test acc "
            f"{accuracy[poor].get('test_acc', math.nan):.3f}"
            + (
                ""
                if acc_gap > 0
                else f"; {good} does NOT generalise better here, so the comparison is moot"
            )
        ),
        figures=[figure],
    )
    return StageOutput(
        scalars={
            "per_network": per_network,
            "network_metrics": accuracy,
            "bottleneck_mean": bottleneck_means,
            "separation": {"difference": difference, "within_network_range": within_spread},
        },
        arrays={f"bottleneck/h{d}": m for d, m in compared["bottleneck"].items()}
        | {f"wasserstein/h{d}": m for d, m in compared["wasserstein"].items()},
        figures={figure: figure_to_png(fig)},
        claims=[topo_claim, sep_claim],
    )
