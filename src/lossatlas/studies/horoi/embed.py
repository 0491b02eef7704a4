"""B2: PHATE and linear views of the jump-and-retrain samples, scored the same way.

``embed_step`` embeds one sample set from one streamed pass over its samples;
``embedding_summary_step`` scores every method over all sets and decides
``horoi.phate_vs_linear``.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np

from lossatlas.analysis.embedding import (
    PHATEEmbedding,
    embed_all,
    score_embeddings,
    streamed_gram,
)
from lossatlas.params import ParamSpace
from lossatlas.plots import figure_to_png, plotly_to_html
from lossatlas.plots.embedding import (
    plot_embedding_grid,
    plot_embedding_interactive,
    plot_embedding_scores,
)
from lossatlas.seeding import make_generator
from lossatlas.stages.output import StageOutput
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi._common import (
    ROOT,
    claim_maker,
    read_set,
    set_group,
    set_tag,
    sets,
    step_configs,
    train_group,
)
from lossatlas.studies.horoi.networks import network, trained_point

__all__ = ["embed_step", "embedding_summary_step"]

_LINEAR = ("pca", "random_plane")
# PHATE's warning when its kNN graph falls apart: "Graph is disconnected with 14 connected ..."
_COMPONENTS = re.compile(r"disconnected with (\d+) connected components")


def embed_step(out: str, config_json: str, *, net: str, seed: int) -> StageOutput:
    """Embed one sample set with every method, from ONE streamed pass over its samples.

    The pass builds the ``S x S`` Gram matrix and the projections on the two plane directions
    (:func:`~lossatlas.analysis.embedding.streamed_gram`); PHATE, PCA, t-SNE, UMAP, the random
    plane and all the scores come from it, so the ``(S, D)`` samples are never in memory.

    Stores ``embeddings/<method>`` ``(S, 2)``, PHATE's ``diff_potential`` ``(S, S)`` (the
    topology step's input), the scores, and the figures.
    """
    core, horoi = step_configs(config_json)
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

    _, _, model = network(core, horoi, net)
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
    tag = set_tag(net, seed)
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


def embedding_summary_step(out: str, config_json: str) -> StageOutput:
    """Scores of every method over all sample sets, and the claim ``horoi.phate_vs_linear``."""
    core, horoi = step_configs(config_json)
    store = AtlasStore.open(out, create=False)
    results = {
        f"{n}/seed{k}": store.attrs(set_group(n, "embed", k))["result"] for n, k in sets(horoi)
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
    claim = claim_maker(core, horoi)
    record = claim(
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
        claims=[record],
    )


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)
