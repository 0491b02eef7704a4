"""The ``train`` stage: a population trained in units of work and written to the atlas store.

Layout written under group ``train`` (``K`` members, ``D`` parameters, ``E`` epochs)::

    init (K, D), params (K, D)           chunked by unit (members_per_unit rows)
    diverged (K,)
    history/{split}_{loss,acc} (K, E+1)  split in train, val, test; column 0 is before training
    buffers/<name> (K, *shape)           BatchNorm statistics, when the model has any
    snapshots (K, S, D)                  when train.snapshot_every > 0; chunk (1, 1, D)

Each unit trains members ``[start, stop)`` and writes only its own rows, so units can run on any
executor in any order; its marker is written after its last row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lossatlas.config import Config, core_config
from lossatlas.context import config_fingerprint, open_store, run_dataset, template_model
from lossatlas.data import Dataset
from lossatlas.execute import Executor, Unit, executor_for, run_units
from lossatlas.location import Location, as_location
from lossatlas.optim import HyperParams
from lossatlas.params import ParamSpace
from lossatlas.populations.train import METRICS, TrainPlan, fit_members, initial_points
from lossatlas.stages.output import describe_section
from lossatlas.store import AtlasStore

__all__ = ["TRAIN_GROUP", "TrainSummary", "train_stage"]

TRAIN_GROUP = "train"


@dataclass(frozen=True)
class TrainSummary:
    """What the train stage did, for the CLI to print."""

    out: Location
    members: int
    dim: int
    ran_units: list[str]
    skipped_units: int
    final: dict[str, np.ndarray]  # "{split}_{metric}" -> (K,) at the last epoch
    diverged: np.ndarray  # (K,) bool
    seconds: float


def train_stage(
    config: Config,
    out: str | Path,
    *,
    executor: Executor | None = None,
    group: str = TRAIN_GROUP,
) -> TrainSummary:
    """Train ``config.train.members`` members and write them to ``OUT/atlas.zarr``.

    Completed units are skipped, so re-running after an interruption resumes. ``group`` is
    where the population goes (the layout above, under that group instead of ``train``).
    """
    started = time.perf_counter()
    # Load (and so validate) the data and the model before touching the store: bad input
    # never leaves an empty store behind.
    dataset = run_dataset(config)
    model = template_model(config, dataset)
    executor = executor or executor_for(config)  # an unreachable cluster fails here too
    # The store's root fingerprint is that of the run's main config; a side population (e.g.
    # one network of a study, with its own label noise or weight decay) lives in a store made
    # for another config, so only its own group's fingerprint guards it.
    store = open_store(out, config) if group == TRAIN_GROUP else AtlasStore.open(out)
    space = ParamSpace(model)
    members, dim, epochs = config.train.members, space.dim, config.train.epochs
    per_unit = config.train.members_per_unit
    store.ensure_group(
        group,
        attrs={
            "members": members,
            "dim": dim,
            "epochs": epochs,
            "param_names": list(space.names),
            "param_shapes": [list(s.shape) for s in space.slots],
            "input_shape": list(dataset.input_shape),
            "num_classes": dataset.num_classes,
            "seeds": {"root": config.seed, "data": config.data.seed},
        },
        fingerprint=config_fingerprint(config),
    )
    if group == TRAIN_GROUP:
        describe_section(
            store,
            group,
            title="Training",
            text="The trained population that the studies and probes start from.",
            order=3,
        )
    _create_arrays(store, config, space, dataset, model, group)
    units = [
        Unit(
            id=f"members-{start:04d}-{min(start + per_unit, members) - 1:04d}",
            fn=train_unit,
            args=(
                str(out),
                core_config(config).model_dump_json(),
                start,
                min(start + per_unit, members),
                group,
            ),
            weight=min(per_unit, members - start),
        )
        for start in range(0, members, per_unit)
    ]
    ran = run_units(executor, store, group, units, description="train")
    seconds = time.perf_counter() - started
    if ran:
        store.record_timing(group, "train", seconds)
    final = {name: store.read(f"{group}/history/{name}")[:, -1] for name in _metric_names(dataset)}
    return TrainSummary(
        out=as_location(out),
        members=members,
        dim=dim,
        ran_units=ran,
        skipped_units=len(units) - len(ran),
        final=final,
        diverged=store.read(f"{group}/diverged"),
        seconds=seconds,
    )


def _metric_names(dataset: Dataset) -> list[str]:
    splits = ["train", "val", "test"] if dataset.x_val.shape[0] else ["train", "test"]
    return [f"{s}_{m}" for s in splits for m in METRICS]


def _snapshot_count(config: Config, steps_per_epoch: int) -> int:
    train = config.train
    if train.snapshot_every == 0:
        return 0
    total = train.epochs if train.snapshot_unit == "epoch" else train.epochs * steps_per_epoch
    return total // train.snapshot_every + 1


def _create_arrays(
    store: AtlasStore,
    config: Config,
    space: ParamSpace,
    dataset: Dataset,
    model: torch.nn.Module,
    group: str = TRAIN_GROUP,
) -> None:
    """Create every array up front (idempotent), so units only ever write their own rows."""
    k, d, e = config.train.members, space.dim, config.train.epochs
    rows = min(config.train.members_per_unit, k)
    for name in ("init", "params"):
        store.create_array(f"{group}/{name}", (k, d), "float32", (rows, d))
    store.create_array(f"{group}/diverged", (k,), "bool", (rows,))
    for name in _metric_names(dataset):
        store.create_array(f"{group}/history/{name}", (k, e + 1), "float32", (rows, e + 1))
    for name, buf in model.named_buffers():
        shape = tuple(buf.shape)
        store.create_array(
            f"{group}/buffers/{name}", (k, *shape), str(buf.dtype).split(".")[-1], (rows, *shape)
        )
    steps_per_epoch = -(-dataset.x_train.shape[0] // config.train.batch_size)
    snapshots = _snapshot_count(config, steps_per_epoch)
    if snapshots:
        store.create_array(
            f"{group}/snapshots",
            (k, snapshots, d),
            "float32",
            (1, 1, d),
            attrs={"unit": config.train.snapshot_unit, "every": config.train.snapshot_every},
        )


def train_unit(out: str, config_json: str, start: int, stop: int, group: str = TRAIN_GROUP) -> None:
    """Train members ``[start, stop)`` and write their rows under ``group``. Any executor."""
    config = Config.model_validate_json(config_json)
    store = AtlasStore.open(out, create=False)
    dataset = run_dataset(config)
    space = ParamSpace(template_model(config, dataset))
    ids = torch.arange(start, stop)
    train = config.train
    init = initial_points(
        space, stop - start, seed=config.seed, start=train.start, member_ids=ids.tolist()
    )
    hp = HyperParams.build(
        init, lr=train.lr, weight_decay=train.weight_decay, momentum=train.momentum
    )
    plan = TrainPlan.from_config(train, seed=config.seed)
    splits = {"train": dataset.split("train"), "test": dataset.split("test")}
    if dataset.x_val.shape[0]:
        splits["val"] = dataset.split("val")
    augment = _augmenter(config, dataset)

    def write_snapshot(index: int, step: int, params: torch.Tensor) -> None:
        store.write(f"{group}/snapshots", (slice(start, stop), index), params)

    population = fit_members(
        space,
        init,
        *dataset.split("train"),
        plan=plan,
        hp=hp,
        member_ids=ids,
        eval_splits=splits,
        augment=augment,
        on_snapshot=write_snapshot if train.snapshot_every else None,
    )
    rows = (slice(start, stop),)
    store.write(f"{group}/init", rows, population.init)
    for name, values in population.history.items():
        store.write(f"{group}/history/{name}", rows, values)
    for name, values in population.buffers.items():
        store.write(f"{group}/buffers/{name}", rows, values)
    store.write(f"{group}/diverged", rows, population.diverged)
    # params last: together with the marker it says the unit's members are finished.
    store.write(f"{group}/params", rows, population.params)


def _augmenter(
    config: Config, dataset: Dataset
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    if not (config.data.augment and dataset.is_image):
        return None
    from lossatlas.data import augment_batch

    return augment_batch
