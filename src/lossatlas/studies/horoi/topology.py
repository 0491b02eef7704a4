"""B3: persistent homology of the loss filtration on the kNN graph of one sample set."""

from __future__ import annotations

import numpy as np

from lossatlas.analysis.topology import LossTopology
from lossatlas.plots import figure_to_png
from lossatlas.plots.topology import plot_barcode, plot_persistence_diagram
from lossatlas.stages.output import StageOutput
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi._common import read_set, set_group, set_tag, step_configs

__all__ = ["topology_step"]


def topology_step(out: str, config_json: str, *, net: str, seed: int) -> StageOutput:
    """Persistent homology of the loss on the kNN graph of one sample set.

    The graph joins each sample to its ``k`` nearest by PHATE's diffusion potential (rows of
    the stored ``(S, S)`` potential, Euclidean: PHATE's potential distance) or by the PHATE
    embedding; vertex ``i`` enters at sample ``i``'s loss, read from the same rows, so the
    loss is never shifted against its sample.
    """
    _, horoi = step_configs(config_json)
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
    tag = set_tag(net, seed)
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
