"""B1: jump and retrain from each network's optima, and the claim ``horoi.jump_retrain``.

:func:`run_jump_sets` streams every ``(network, base seed)`` set into the store (the jump stage,
:func:`~lossatlas.stages.jumps.run_jumps_to_store`), jumping from that base seed's network;
``jump_summary_step`` draws the curves and decides the claim with
:func:`decide_jump_retrain` over the sets (each an independent network and its own
directions: a replicate).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lossatlas.analysis.statistics import all_of, control, decide, permutation_control
from lossatlas.claims import Decision
from lossatlas.config import Config
from lossatlas.execute import Executor
from lossatlas.plots import figure_to_png
from lossatlas.plots.jump import plot_jump_distance, plot_jump_loss
from lossatlas.stages.jumps import run_jumps_to_store
from lossatlas.stages.output import StageOutput
from lossatlas.store import AtlasStore
from lossatlas.studies.horoi._common import (
    claim_maker,
    member_of,
    part_summary,
    read_set,
    set_group,
    set_tag,
    sets,
    step_configs,
    train_group,
)
from lossatlas.studies.horoi.config import HoroiConfig
from lossatlas.studies.horoi.networks import network, network_metrics, trained_point

__all__ = [
    "RECOVERY",
    "decide_jump_retrain",
    "jump_summary_step",
    "recovery_fractions",
    "run_jump_sets",
    "start_trend",
]

RECOVERY = 0.9
"""The share of a jump's train-loss increase that retraining must win back, at every size."""

_NULL_DRAWS = 200


def run_jump_sets(
    core: Config, horoi: HoroiConfig, net: str, out: str | Path, *, executor: Executor | None
) -> None:
    """Jump from each of network ``net``'s optima (one per base seed) and retrain, into the
    store: set ``(net, k)`` jumps from member ``seeds.index(k)`` with jump base seed ``k``."""
    store = AtlasStore.open(out, create=False)
    _, dataset, model = network(core, horoi, net)
    for seed in horoi.generalization.seeds:
        center, buffers = trained_point(store, train_group(net), model, member_of(horoi, seed))
        # The jumps retrain on the network's own (possibly noisy or smaller) training set;
        # their test metrics use the clean test labels.
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


# --------------------------------------------------------------------------- decisions


def recovery_fractions(loss: np.ndarray, reference: float) -> np.ndarray:
    """Per jump, the share of its loss increase that retraining won back, after every epoch.

    ``loss`` ``(M, T)``: each jump's loss at snapshot ``t`` (0 = the jump point);
    ``reference``: the optimum's loss. Returns ``(M, T)``
    ``(loss[:, 0] - loss[:, t]) / (loss[:, 0] - reference)``: 0 at the jump point, 1 back at
    the optimum's loss. A jump that did not raise the loss (or diverged) is NaN: left out.
    """
    values = np.asarray(loss, dtype=np.float64)
    rise = values[:, :1] - float(reference)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (values[:, :1] - values) / rise
    return np.where(np.isfinite(rise) & (rise > 0), out, np.nan)


def worst_size_recovery(fractions: np.ndarray, size: np.ndarray) -> float:
    """The smallest over jump sizes of the mean (over directions) recovered share ``(M,)``."""
    means = [np.nanmean(fractions[size == a]) for a in np.unique(size)]
    finite = [m for m in means if math.isfinite(m)]
    return float(min(finite)) if len(finite) == len(means) and finite else math.nan


def start_trend(size: np.ndarray, start_loss: np.ndarray) -> float:
    """Spearman rho between jump size and the loss right after the jump, over one set's jumps
    ``(M,)``; NaN when either is constant or fewer than three jumps are finite."""
    keep = np.isfinite(start_loss)
    if keep.sum() < 3 or np.ptp(size[keep]) == 0 or np.ptp(start_loss[keep]) == 0:
        return math.nan
    return float(stats.spearmanr(size[keep], start_loss[keep]).statistic)


def decide_jump_retrain(
    sizes: list[np.ndarray],
    start_losses: list[np.ndarray],
    recovered: list[float],
    not_retrained: list[float],
    *,
    seed: int = 0,
) -> tuple[Decision, dict[str, Decision]]:
    """``horoi.jump_retrain``: larger jumps start higher, and retraining recovers most of it.

    Over replicates (one per ``(network, base seed)`` set):

    * ``start_rises``: Spearman rho between jump size and the loss at the jump point, above 0;
      control: the same rho with the sizes permuted among the set's jumps.
    * ``recovers``: the worst size's mean recovered share of the train-loss increase (see
      :func:`recovery_fractions`) after the last epoch, above :data:`RECOVERY`; control: the
      same share for the trajectories not retrained (``not_retrained``, their jump points).

    The evidence is ``recovers``'; returns the decision and each part's own.
    """
    ordered = [np.asarray(a)[np.argsort(a, kind="stable")] for a in sizes]
    items = [
        list(np.asarray(loss)[np.argsort(a, kind="stable")])
        for a, loss in zip(sizes, start_losses, strict=True)
    ]

    # permutation_control hands every replicate's shuffles to one statistic: the sets share
    # their sizes' layout (the same jump options), so the first one's sorted sizes serve all.
    def permuted_trend(values: list[Any]) -> float:
        return start_trend(ordered[0], np.asarray(values, dtype=float))

    rises = decide(
        [start_trend(a, loss) for a, loss in zip(sizes, start_losses, strict=True)],
        0.0,
        "above",
        "Spearman rho between jump size and the loss right after the jump, over a set's jumps",
        control=permutation_control(
            "the same rho with the jump sizes permuted among a set's jumps",
            items,
            permuted_trend,
            0.0,
            "above",
            seed=seed,
            draws=_NULL_DRAWS,
        ),
    )
    recovers = decide(
        recovered,
        RECOVERY,
        "above",
        "share of the jump's train-loss increase won back after the last retraining epoch "
        "(worst jump size's mean over directions)",
        control=control(
            "the same share for trajectories not retrained (their jump points)",
            not_retrained,
            RECOVERY,
            "above",
        ),
    )
    parts = {"start_rises": rises, "recovers": recovers}
    return Decision(all_of(d.verdict for d in parts.values()), recovers.evidence), parts


# --------------------------------------------------------------------------- the step


def _epochs_to_recover(fractions: np.ndarray, size: np.ndarray, epoch: np.ndarray) -> float:
    """The first epoch at which the worst size's mean recovered share reaches RECOVERY."""
    for t in range(fractions.shape[1]):
        if worst_size_recovery(fractions[:, t], size) >= RECOVERY:
            return float(epoch[t])
    return math.nan


def jump_summary_step(out: str, config_json: str) -> StageOutput:
    """Jump curves of every sample set and the claim ``horoi.jump_retrain``."""
    core, horoi = step_configs(config_json)
    store = AtlasStore.open(out, create=False)
    split = horoi.topology.loss_split
    figures: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    per_set: dict[str, dict[str, Any]] = {}
    sizes, starts, recovered, controls = [], [], [], []
    for net, seed in sets(horoi):
        data = read_set(store, net, seed)
        name = f"{net}/seed{seed}"
        counts[name] = data.count
        t = data.snapshots
        epoch = data.epoch[:t]
        size = data.size[::t]
        curves = {
            s: data.per_jump(data.metrics[f"{s}_loss"])
            for s in ("train", "val", "test")
            if f"{s}_loss" in data.metrics
        }
        distance = data.per_jump(data.metrics["distance"])
        acc = data.per_jump(data.metrics[f"{split}_acc"])
        optimum = network_metrics(store, net)
        member = member_of(horoi, seed)
        train = np.where(data.diverged[:, None], np.nan, curves["train"])
        fractions = recovery_fractions(train, optimum["train_loss"][member])
        # The same share on the log scale: how many of the jump's decades of loss came back.
        log_fractions = recovery_fractions(np.log(train), math.log(optimum["train_loss"][member]))
        test_fractions = recovery_fractions(curves[split], optimum[f"{split}_loss"][member])
        sizes.append(size)
        starts.append(train[:, 0])
        recovered.append(worst_size_recovery(fractions[:, -1], size))
        controls.append(worst_size_recovery(fractions[:, 0], size))
        per_set[name] = {
            "optimum_train_loss": optimum["train_loss"][member],
            f"optimum_{split}_loss": optimum[f"{split}_loss"][member],
            "start_trend": start_trend(size, train[:, 0]),
            "recovered": recovered[-1],
            "epochs_to_recover": _epochs_to_recover(fractions, size, epoch),
            "left_out_diverged": int(data.diverged.sum()),
            "by_size": {
                f"{a:g}": {
                    "jump_train_loss": float(np.nanmean(train[size == a, 0])),
                    "final_train_loss": float(np.nanmean(train[size == a, -1])),
                    "recovered_train": float(np.nanmean(fractions[size == a, -1])),
                    "recovered_train_log": float(np.nanmean(log_fractions[size == a, -1])),
                    f"jump_{split}_loss": float(np.nanmean(curves[split][size == a, 0])),
                    f"final_{split}_loss": float(np.nanmean(curves[split][size == a, -1])),
                    f"recovered_{split}": float(np.nanmean(test_fractions[size == a, -1])),
                    f"final_{split}_acc": float(np.nanmean(acc[size == a, -1])),
                    "final_distance": float(np.nanmean(distance[size == a, -1])),
                }
                for a in np.unique(size)
            },
        }
        tag, where = set_tag(net, seed), f"{net} network, base seed {seed}"
        figures[f"jump_loss_{tag}.png"] = figure_to_png(
            plot_jump_loss(epoch, curves, size, title=f"Loss after the jump, {where}", logy=True)
        )
        figures[f"jump_distance_{tag}.png"] = figure_to_png(
            plot_jump_distance(epoch, distance, size, title=f"Distance from θ*, {where}")
        )

    decision, parts = decide_jump_retrain(sizes, starts, recovered, controls, seed=core.seed)
    total = int(sum(counts.values()))
    expected: int | None = None
    if horoi.jump.snapshot_unit == "epoch":
        # Counted from the options, independently of what the jump stage recorded.
        snapshots = horoi.jump.epochs // horoi.jump.snapshot_every + 1
        expected = len(sets(horoi)) * horoi.jump.members * snapshots
    if expected is not None and total != expected:
        decision = Decision("inconclusive", decision.evidence)
    measured = {
        "samples": total,
        "expected_samples": expected,
        "samples_per_set": counts,
        "parts": {k: part_summary(d) for k, d in parts.items()},
        "per_set": per_set,
        "retrain_epochs": horoi.jump.epochs,
        "loss_split": split,
    }
    claim = claim_maker(core, horoi)
    cited = [name for name in figures if name.startswith("jump_loss_")][:2]
    record = claim(
        "horoi.jump_retrain",
        "Jumps from an optimum along filter-normalised random directions, retrained with a "
        "small constant LR, give trajectories that start at a loss that grows with the jump "
        "size and return towards the optimum's loss as they retrain.",
        "qualitative: 16 jumps (sizes 0.25-1.0 x 4 seeds), 40 epochs each, 640 samples; "
        "larger jumps start higher, retraining brings the loss back down",
        measured,
        decision,
        "holds if, over the (network, base seed) sets, (a) the Spearman rho between jump size "
        "and the train loss right after the jump is above 0 (95% t interval, and beyond its "
        "size-permutation null) and (b) after the last retraining epoch every jump size wins "
        f"back at least {RECOVERY:.0%} of its mean train-loss increase over the optimum "
        "(worst size, 95% t interval above it; control: the not-retrained jump points, 0%); "
        "diverged jumps are left out and counted; inconclusive if the store does not hold "
        "networks x base seeds x jumps x (epochs + 1) samples",
        notes=f"retrained {horoi.jump.epochs} epochs (paper: 40) on each network's own "
        f"training set; the {split} split's jump/final losses and recovered shares are "
        "reported per size beside the train loss that decides, and recovered_train_log, the "
        "same share of log(loss) (a jump that leaves the loss 10x above the optimum wins "
        "back only part of its decades); epochs_to_recover is the first "
        f"epoch at which every size's mean share reaches {RECOVERY:.0%} (NaN: not within the "
        "run)",
        figures=cited,
    )
    return StageOutput(
        scalars={"samples": total, "per_set": per_set},
        figures=figures,
        claims=[record],
    )
