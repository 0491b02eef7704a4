"""B3/B4: the topology of the two networks compared, and the claims
``horoi.topology_summary`` and ``horoi.generalization_separation``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lossatlas.analysis.topology import compare_networks
from lossatlas.plots import figure_to_png
from lossatlas.plots.topology import plot_topology_comparison
from lossatlas.stages.output import StageOutput
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi._common import claim_maker, set_group, set_tag, sets, step_configs
from lossatlas.studies.horoi.networks import network_metrics

__all__ = ["compare_step"]

_SUMMARY_KEYS = ("total_persistence", "entropy", "n_features", "pinf_norm")


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


def compare_step(out: str, config_json: str) -> StageOutput:
    """Summaries per network, distances between all sample sets, and the B3/B4 claims."""
    core, horoi = step_configs(config_json)
    store = AtlasStore.open(out, create=False)
    nets = list(horoi.generalization.networks)
    seeds = horoi.generalization.seeds
    diagrams: dict[str, dict[int, np.ndarray]] = {}
    summaries: dict[str, dict[str, float]] = {}
    owner: list[str] = []
    caps = []
    graph_k: dict[str, int] = {}
    for net, seed in sets(horoi):
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
    accuracy = {net: network_metrics(store, net) for net in nets}

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
    claim = claim_maker(core, horoi)
    figure = "topology_comparison.png"
    fig = plot_topology_comparison(
        diagrams, summaries=summaries, cap=cap, title="Loss topology, networks x base seeds"
    )

    topo_claim = claim(
        "horoi.topology_summary",
        "Persistent homology of the test-loss sublevel filtration on the kNN graph of PHATE's "
        "diffusion potential summarises each network's sampled landscape (H0: basins, H1: "
        "loops).",
        "qualitative (no numbers): total persistence, p-norms, persistent entropy and feature "
        "counts of H0 and H1",
        {"per_network": per_network, "per_set": summaries, "graph_k": graph_k, "cap": cap},
        None,
        "descriptive, no paper number to compare: per network, the mean and min-max over "
        f"base seeds {seeds} of the H0/H1 summaries (infinite bars capped at each set's "
        "largest loss)",
        notes=f"graph k={horoi.topology.k} (clamped to S - 1 when smaller), from "
        f"{horoi.topology.graph_from}; flag complex up to dimension "
        f"{horoi.topology.max_dimension}",
        figures=[figure, f"barcode_{set_tag(good, seeds[0])}.png"],
    )
    sep_claim = claim(
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
