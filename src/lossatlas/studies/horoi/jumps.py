"""B1: jump and retrain from each network's optimum, and the claim ``horoi.jump_retrain``.

:func:`run_jump_sets` streams every ``(network, base seed)`` set into the store (the jump stage,
:func:`~lossatlas.stages.jumps.run_jumps_to_store`); ``jump_summary_step`` draws the curves and
decides the claim.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lossatlas.config import Config
from lossatlas.execute import Executor
from lossatlas.plots import figure_to_png
from lossatlas.plots.jump import plot_jump_distance, plot_jump_loss
from lossatlas.stages.jumps import run_jumps_to_store
from lossatlas.stages.output import StageOutput
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi._common import (
    claim_maker,
    read_set,
    set_group,
    set_tag,
    sets,
    step_configs,
    train_group,
)
from lossatlas.studies.horoi.config import HoroiConfig
from lossatlas.studies.horoi.networks import network, trained_point

__all__ = ["jump_summary_step", "run_jump_sets"]


def run_jump_sets(
    core: Config, horoi: HoroiConfig, net: str, out: str | Path, *, executor: Executor | None
) -> None:
    """Jump from network ``net``'s optimum and retrain, once per base seed, into the store."""
    store = AtlasStore.open(out, create=False)
    _, dataset, model = network(core, horoi, net)
    center, buffers = trained_point(store, train_group(net), model)
    for seed in horoi.generalization.seeds:
        # The jumps retrain on the network's own (possibly noisy) training set; their test
        # metrics use the clean test labels.
        run_jumps_to_store(
            store,
            set_group(net, "jumps", seed),
            model,
            dataset,
            center,
            horoi.jump,
            buffers,
            base_seed=seed,
            executor=executor,
        )


def jump_summary_step(out: str, config_json: str) -> StageOutput:
    """Jump curves of every sample set and the claim ``horoi.jump_retrain``."""
    core, horoi = step_configs(config_json)
    store = AtlasStore.open(out, create=False)
    split = horoi.topology.loss_split
    figures: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    # net -> size -> lists over (base seed, direction) of per-jump values
    pooled: dict[str, dict[float, dict[str, list[float]]]] = {}
    for net, seed in sets(horoi):
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
        tag, where = set_tag(net, seed), f"{net} network, base seed {seed}"
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
        expected = len(sets(horoi)) * horoi.jump.members * snapshots
    measured = {
        "samples": total,
        "expected_samples": expected,
        "samples_per_set": counts,
        "per_network_by_size": by_size,
        "distance_increases_with_size": increasing,
        "loss_split": split,
    }
    claim = claim_maker(core, horoi)
    cited = [name for name in figures if name.startswith("jump_") and "seed" in name][:2]
    record = claim(
        "horoi.jump_retrain",
        "Jumps from an optimum along filter-normalised random directions, retrained with a "
        "small constant LR, give trajectories whose loss and distance depend on the jump size: "
        "larger jumps start higher and end farther from the optimum.",
        "qualitative: 16 jumps (sizes 0.25-1.0 x 4 seeds), 40 epochs each, 640 samples; "
        "larger jumps end farther away",
        measured,
        all(increasing.values()) and (expected is None or total == expected),
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
        claims=[record],
    )
