"""B3: persistent homology of the loss on the connected kNN graph of one sample set.

The filtration is rank-normalised (each sample enters at its loss's rank / S) and the graph's
pieces are joined by minimum-spanning-tree edges, so neither the loss range nor the number
of graph pieces decides a bar; the permutation null (losses shuffled across the same
graph's vertices) is computed here, per set, for the claims of :mod:`~.compare`.
"""

from __future__ import annotations

import numpy as np

from lossatlas.analysis.topology import (
    LossTopology,
    finite_persistence,
    shuffled_h0_persistence,
)
from lossatlas.plots import figure_to_png
from lossatlas.plots.topology import plot_barcode, plot_persistence_diagram
from lossatlas.seeding import numpy_rng
from lossatlas.stages.output import StageOutput
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi._common import read_set, set_group, set_tag, step_configs

__all__ = ["topology_step"]


def topology_step(out: str, config_json: str, *, net: str, seed: int) -> StageOutput:
    """Persistent homology of the rank-normalised loss on the connected kNN graph of one set.

    The graph joins each sample to its ``k`` nearest by the diffusion potential of PHATE at
    the smallest knn that connects PHATE's own graph (rows of the stored ``(S, S)`` potential,
    Euclidean: PHATE's potential distance) or by that PHATE's embedding; vertex ``i`` enters
    at the rank of sample ``i``'s loss, read from
    the same rows, so the loss is never shifted against its sample. The graph's pieces are
    joined by the edges of its minimum spanning tree (the shortest links between them).

    Stores the ``H0``/``H1`` diagrams, the edges, the summaries, ``h0_finite`` (the total
    lifetime of the finite ``H0`` bars, the statistic the claims test) and its permutation
    null ``null/h0_finite`` ``(draws,)``.
    """
    core, horoi = step_configs(config_json)
    opts = horoi.topology
    store = AtlasStore.open(out, create=False)
    data = read_set(store, net, seed)
    embed = set_group(net, "embed", seed)
    source = "diff_potential_connected" if opts.graph_from == "potential" else "embeddings/"
    if opts.graph_from == "potential":
        if not store.has(f"{embed}/{source}"):
            raise ValueError("topology.graph_from='potential' needs 'phate' in embed.methods")
        rows = store.read(f"{embed}/{source}")
    else:
        source = "embeddings/phate_connected"
        if not store.has(f"{embed}/{source}"):
            raise ValueError("topology.graph_from='embedding' needs 'phate' in embed.methods")
        rows = store.read(f"{embed}/{source}")
    losses = data.metrics[f"{opts.loss_split}_loss"]
    n = data.count
    k = min(opts.k, n - 1)
    topo = LossTopology(
        k=k,
        max_dimension=opts.max_dimension,
        graph_from=opts.graph_from,
        filtration="rank",
        connect=True,
    )
    topo.fit(rows, losses)
    pieces = topo.components_
    h0_finite = finite_persistence(topo.diagrams_[0])
    h1 = topo.diagrams_.get(1, np.empty((0, 2)))
    null = shuffled_h0_persistence(
        topo.edges_, topo.values_, numpy_rng(core.seed, "horoi", "null", net, seed), opts.null_draws
    )
    notes = []
    if k != opts.k:
        notes.append(f"k clamped to {k} = S - 1")
    if pieces > 1:
        notes.append(
            f"the k={k} graph has {pieces} components, joined by minimum-spanning-tree edges"
        )
    tag = set_tag(net, seed)
    where = f"{net} network, base seed {seed} (loss ranks)"
    figures = {
        f"barcode_{tag}.png": plot_barcode(topo.diagrams_, cap=topo.cap_, title=where),
        f"diagram_{tag}.png": plot_persistence_diagram(topo.diagrams_, cap=topo.cap_, title=where),
    }
    arrays: dict[str, np.ndarray] = {f"diagrams/h{d}": v for d, v in topo.diagrams_.items()}
    arrays["edges"] = topo.edges_
    arrays["null/h0_finite"] = null
    return StageOutput(
        arrays=arrays,
        scalars={
            "summary": topo.summary_,
            "h0_finite": h0_finite,
            "h1_finite": finite_persistence(h1) if len(h1) else 0.0,
            "h1_bars": len(h1),
            "null_h0_finite": {
                "mean": float(null.mean()),
                "null_95": [float(np.quantile(null, 0.025)), float(np.quantile(null, 0.975))],
                "draws": int(null.size),
            },
            "k": k,
            "components_at_k": pieces,
            "filtration": f"rank of the {opts.loss_split} loss / S",
            "graph_rows": source,
            "cap": topo.cap_,
            "edges": int(topo.edges_.shape[0]),
            "samples": n,
            "notes": notes,
        },
        figures={name: figure_to_png(fig) for name, fig in figures.items()},
    )
