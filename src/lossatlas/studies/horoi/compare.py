"""B3/B4: the topology of the two networks compared, and the claims
``horoi.topology_summary`` and ``horoi.generalization_separation``.

Both are decided on ``h0_finite``, the total lifetime of the finite ``H0`` bars of the
rank-normalised loss on a connected kNN graph (:mod:`~.topology`): it counts how deep the
landscape's separate basins are, in shares of the samples, and neither the number of graph
pieces nor the loss range can move it. Each set's permutation null (the same graph, losses
shuffled across its vertices) is the control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lossatlas.analysis.statistics import Direction, decide, mean_interval, null_control
from lossatlas.analysis.topology import compare_networks
from lossatlas.claims import Decision
from lossatlas.plots import figure_to_png
from lossatlas.plots.topology import plot_topology_comparison
from lossatlas.stages.output import StageOutput
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi._common import (
    claim_maker,
    set_group,
    set_tag,
    sets,
    step_configs,
)
from lossatlas.studies.horoi.networks import network_metrics

__all__ = ["compare_step", "decide_landscape_topology", "decide_separation"]

_STATISTIC = (
    "total lifetime of the finite H0 bars of the rank-normalised test loss on the connected "
    "kNN graph (shares of the samples)"
)


def decide_landscape_topology(values: Sequence[float], null_draws: np.ndarray) -> Decision:
    """``horoi.topology_summary``: the statistic reads the landscape, not the graph.

    ``values`` ``(R,)``: each set's statistic; ``null_draws`` ``(R, n)``: the same with the
    losses shuffled across the set's vertices. Decided on each set's value minus its null's
    mean: below 0 (a landscape smoother than a random function on the same graph: fewer,
    shallower separate basins), with the centred null as the control.
    """
    table = np.atleast_2d(np.asarray(null_draws, dtype=np.float64))
    centre = np.nanmean(table, axis=1)
    return decide(
        np.asarray(values, dtype=np.float64) - centre,
        0.0,
        "below",
        f"{_STATISTIC}, minus the mean of its shuffled-loss null, per sample set",
        control=null_control(
            "losses shuffled across the vertices of the same graph",
            table - centre[:, None],
            0.0,
            "below",
        ),
    )


def decide_separation(
    good: Sequence[float],
    poor: Sequence[float],
    good_null: np.ndarray,
    poor_null: np.ndarray,
) -> Decision:
    """``horoi.generalization_separation``: the networks differ by more than chance and seeds.

    ``good``/``poor`` ``(R,)``: the statistic per base seed (paired by seed); the nulls
    ``(R, n)``. The difference ``good - poor`` per seed must have a 95% t interval over the
    base seeds that excludes 0 (the spread over seeds) and a mean beyond the 95% range of the
    same difference with each set's losses shuffled (the null). Two-sided: the paper does not
    say which network has more persistence, so the side is the estimate's.
    """
    diffs = np.asarray(good, dtype=np.float64) - np.asarray(poor, dtype=np.float64)
    null = np.atleast_2d(np.asarray(good_null, dtype=np.float64)) - np.atleast_2d(
        np.asarray(poor_null, dtype=np.float64)
    )
    found = mean_interval(diffs)
    direction: Direction = (
        "below" if math.isfinite(found.estimate) and found.estimate < 0 else "above"
    )
    return decide(
        diffs,
        0.0,
        direction,
        f"difference good - poor of the {_STATISTIC}, per base seed",
        control=null_control(
            "the same difference with each set's losses shuffled across its vertices",
            null,
            0.0,
            direction,
        ),
    )


def _spread(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    found = mean_interval(arr)
    return {
        "mean": found.estimate,
        "ci95": found.bounds,  # type: ignore[dict-item]
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def _h1_note(h1_bars: dict[str, int], k: dict[str, int]) -> str:
    if any(h1_bars.values()):
        return f"H1 bars per set: {h1_bars}"
    return (
        f"H1 is empty in every set: in the flag complex of the kNN graph (k per set: {k}) "
        "every cycle is filled by triangles the moment its last edge enters (with k "
        "neighbours along a trajectory, a loop's vertices are each other's neighbours), so no "
        "loop lives for any span of the filtration; the bare graph (max_dimension=1) has only "
        "infinite H1 bars, E - S + 1 of them, which count edges, not the landscape"
    )


def compare_step(out: str, config_json: str) -> StageOutput:
    """Summaries per network, distances between all sample sets, and the B3/B4 claims."""
    core, horoi = step_configs(config_json)
    store = AtlasStore.open(out, create=False)
    nets = list(horoi.generalization.networks)
    seeds = horoi.generalization.seeds
    diagrams: dict[str, dict[int, np.ndarray]] = {}
    results: dict[str, dict[str, Any]] = {}
    nulls: dict[str, np.ndarray] = {}
    for net, seed in sets(horoi):
        group = set_group(net, "topology", seed)
        name = f"{net} s{seed}"
        results[name] = store.attrs(group)["result"]
        diagrams[name] = {
            d: store.read(f"{group}/diagrams/h{d}")
            for d in (0, 1)
            if store.has(f"{group}/diagrams/h{d}")
        }
        nulls[name] = store.read(f"{group}/null/h0_finite")
    # Rank filtrations share one scale: every value is in (0, 1], infinite bars end at 1.
    compared = compare_networks(diagrams, cap=1.0)
    stat = {name: float(r["h0_finite"]) for name, r in results.items()}
    per_network = {
        net: {
            "h0_finite": _spread([stat[f"{net} s{k}"] for k in seeds]),
            "null_h0_finite_mean": _spread([float(nulls[f"{net} s{k}"].mean()) for k in seeds]),
            "h1_bars": [int(results[f"{net} s{k}"]["h1_bars"]) for k in seeds],
        }
        for net in nets
    }
    accuracy = {net: network_metrics(store, net) for net in nets}
    good, poor = nets
    h1_bars = {name: int(r["h1_bars"]) for name, r in results.items()}
    graph_k = {name: int(r["k"]) for name, r in results.items()}

    names = list(results)
    landscape = decide_landscape_topology(
        [stat[n] for n in names], np.stack([nulls[n] for n in names])
    )
    separation = decide_separation(
        [stat[f"{good} s{k}"] for k in seeds],
        [stat[f"{poor} s{k}"] for k in seeds],
        np.stack([nulls[f"{good} s{k}"] for k in seeds]),
        np.stack([nulls[f"{poor} s{k}"] for k in seeds]),
    )
    gap = mean_interval(
        np.asarray(accuracy[good].get("test_acc", [math.nan]))
        - np.asarray(accuracy[poor].get("test_acc", [math.nan]))
    )
    moot = not (gap.bounds is not None and gap.bounds[0] > 0)
    if moot and separation.verdict == "holds":
        separation = Decision("inconclusive", separation.evidence)
    bottleneck = {
        f"h{d}": _pair_distances(names, [n.split(" ")[0] for n in names], m)
        for d, m in compared["bottleneck"].items()
    }
    claim = claim_maker(core, horoi)
    figure = "topology_comparison.png"
    fig = plot_topology_comparison(
        diagrams,
        summaries=compared["summaries"],
        cap=1.0,
        title="Loss-rank topology, networks x base seeds",
    )
    topo_claim = claim(
        "horoi.topology_summary",
        "Persistent homology of the test-loss sublevel filtration on the kNN graph of PHATE's "
        "diffusion potential summarises each network's sampled landscape (H0: basins, H1: "
        "loops).",
        "qualitative (no numbers): total persistence, p-norms, persistent entropy and feature "
        "counts of H0 and H1",
        {
            "per_network": per_network,
            "per_set": {n: {**r["summary"], "h0_finite": stat[n]} for n, r in results.items()},
            "null_per_set": {n: r["null_h0_finite"] for n, r in results.items()},
            "graph_k": graph_k,
            "components_at_asked_k": {n: int(r["components_at_k"]) for n, r in results.items()},
            "h1_bars": h1_bars,
        },
        landscape,
        "holds if, over the (network, base seed) sets, the finite H0 persistence of the "
        "rank-normalised test loss on the kNN graph (k = "
        f"{horoi.topology.k}, pieces joined by minimum-spanning-tree edges) minus its "
        "shuffled-loss null mean has a 95% t "
        "interval below 0 and a mean below the centred null's 95% range: the summary then "
        "reads the landscape (its basins), not the graph",
        notes=_h1_note(h1_bars, graph_k)
        + f"; graph rows: {horoi.topology.graph_from} of PHATE at its connecting knn; flag "
        f"complex up to dimension {horoi.topology.max_dimension}; "
        f"{horoi.topology.null_draws} null draws per set",
        figures=[figure, f"barcode_{set_tag(good, seeds[0])}.png"],
    )
    sep_claim = claim(
        "horoi.generalization_separation",
        "The topological summaries of the jump-and-retrain samples separate a well-"
        "generalising network from a poorly generalising one.",
        "qualitative (B4): summaries and embeddings differ between well- and poorly-"
        "generalising networks; how the poor ones were made is not stated",
        {
            "per_network": per_network,
            "network_metrics": accuracy,
            "test_acc_gap": {"mean": gap.estimate, "ci95": gap.bounds},
            "bottleneck": bottleneck,
        },
        separation,
        f"holds if the per-base-seed difference {good} - {poor} of the finite H0 persistence "
        f"(rank-normalised test loss, connected graph) has a 95% t interval over base seeds "
        f"{seeds} that excludes 0 and a mean beyond the 95% range of the same difference with "
        f"the losses shuffled (two-sided); inconclusive unless {good}'s test accuracy is above "
        f"{poor}'s (95% t interval of the gap above 0)",
        notes=(
            f"{good} test acc {_fmt(accuracy[good].get('test_acc'))}, train acc "
            f"{_fmt(accuracy[good].get('train_acc'))}; {poor} test acc "
            f"{_fmt(accuracy[poor].get('test_acc'))}, train acc "
            f"{_fmt(accuracy[poor].get('train_acc'))} (per base seed; train on each network's "
            "own training set)"
            + (
                "; the networks do NOT differ in test accuracy here, so the comparison is moot"
                if moot
                else ""
            )
        ),
        figures=[figure],
    )
    return StageOutput(
        scalars={
            "per_network": per_network,
            "network_metrics": accuracy,
            "separation": {
                "estimate": separation.evidence.estimate,
                "ci95": separation.evidence.ci95,
            },
        },
        arrays={f"bottleneck/h{d}": m for d, m in compared["bottleneck"].items()}
        | {f"wasserstein/h{d}": m for d, m in compared["wasserstein"].items()},
        figures={figure: figure_to_png(fig)},
        claims=[topo_claim, sep_claim],
    )


def _fmt(values: Sequence[float] | None) -> str:
    return "n/a" if not values else "/".join(f"{v:.3f}" for v in values)


def _pair_distances(
    names: Sequence[str], nets: Sequence[str], matrix: np.ndarray
) -> dict[str, float]:
    """Mean off-diagonal entry of a set-by-set matrix, within and between networks."""
    within: list[float] = []
    between: list[float] = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            (within if nets[i] == nets[j] else between).append(float(matrix[i, j]))
    return {
        "within": float(np.mean(within)) if within else math.nan,
        "between": float(np.mean(between)) if between else math.nan,
    }
