"""The jump stage: jump-and-retrain runs streamed into the atlas store, in units of work.

Layout written by :func:`run_jumps_to_store` under ``group`` (``T`` snapshots per jump;
sample row ``r = member * T + t``, member-major then snapshot)::

    samples (M*T, D) float32             chunk (1, D): one snapshot per chunk
    meta/{member,size,seed,epoch,step} (M*T,)
    metrics/{split}_{loss,acc} (M*T,)    split in train, val, test
    metrics/distance (M*T,)              |theta - theta*| (L2) at that sample
    final (M, D), diverged (M,)          the parameters after the last epoch

One row per chunk for ``samples``: each snapshot is written once, when it is taken, without
reading or rewriting any other (a ``(T, D)`` chunk would be read and rewritten at every snapshot,
quadratic in ``T``); a unit of work owns its rows' chunks outright, so workers never share a
chunk; and a streaming reader (the embedding stage) can read any block of rows, e.g. one member's
trajectory or a batch of samples for an out-of-core PCA, touching only those rows. The 1-D
columns are chunked by unit (``jumps_per_unit * T`` rows), written once at the unit's end.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lossatlas.data.adapter import training_data
from lossatlas.execute import Executor, LocalExecutor, Unit, run_units
from lossatlas.params import ParamSpace
from lossatlas.populations.jump import JumpOptions, jump_and_retrain, jump_columns
from lossatlas.populations.train import METRICS
from lossatlas.store import AtlasStore

__all__ = ["JumpStoreSummary", "run_jumps_to_store"]


@dataclass(frozen=True)
class JumpStoreSummary:
    """What :func:`run_jumps_to_store` did."""

    group: str
    members: int
    snapshots: int
    dim: int
    ran_units: list[str]
    skipped_units: int
    seconds: float


_META_COLUMNS = {
    "member": "int64",
    "size": "float64",
    "seed": "int64",
    "epoch": "float64",
    "step": "int64",
}


def run_jumps_to_store(
    store: AtlasStore,
    group: str,
    model: nn.Module,
    dataset: Any,
    center: torch.Tensor | None = None,
    options: JumpOptions | None = None,
    buffers: Mapping[str, torch.Tensor] | None = None,
    base_seed: int = 0,
    executor: Executor | None = None,
) -> JumpStoreSummary:
    """Run the jumps in units of ``jumps_per_unit`` and stream them into ``store`` under ``group``.

    Every array is preallocated first (see the module docstring for the layout); each unit
    retrains members ``[start, stop)`` as one population, writes each snapshot into its rows as
    it is taken, then its metrics, and its marker last. Completed units are skipped, so a
    killed run resumes where it stopped; a group made with other options, base seed or centre
    is refused (:class:`~lossatlas.errors.StoreError`) before anything is written.
    """
    started = time.perf_counter()
    opts = options or JumpOptions()
    x_train, _, splits = training_data(dataset)
    space = ParamSpace(model)
    point = space.flatten() if center is None else center.detach()
    steps_per_epoch = math.ceil(x_train.shape[0] / opts.batch_size)
    m, d, t = opts.members, space.dim, opts.snapshot_count(steps_per_epoch)
    per_unit = opts.jumps_per_unit
    store.ensure_group(
        group,
        attrs={
            "members": m,
            "snapshots": t,
            "dim": d,
            "sizes": opts.sizes,
            "seeds": opts.seeds,
            "base_seed": base_seed,
            "bn_policy": opts.bn_policy,
            "ordering": "member = seed_index * len(sizes) + size_index; row = member * T + t",
            "options": opts.model_dump(mode="json"),
        },
        fingerprint={
            "options": opts.model_dump(mode="json"),
            "base_seed": base_seed,
            "dim": d,
            "center": _digest(point),
        },
    )
    rows = min(per_unit, m) * t
    store.create_array(f"{group}/samples", (m * t, d), "float32", (1, d))
    for name, dtype in _META_COLUMNS.items():
        store.create_array(f"{group}/meta/{name}", (m * t,), dtype, (rows,))
    metric_names = [f"{s}_{k}" for s in splits for k in METRICS] + ["distance"]
    for name in metric_names:
        store.create_array(f"{group}/metrics/{name}", (m * t,), "float32", (rows,))
    store.create_array(f"{group}/final", (m, d), "float32", (1, d))
    store.create_array(f"{group}/diverged", (m,), "bool", (min(per_unit, m),))
    units = [
        Unit(
            id=f"jumps-{start:04d}-{min(start + per_unit, m) - 1:04d}",
            fn=_jump_unit,
            args=(
                str(store.out_dir),
                group,
                model,
                dataset,
                point,
                opts.model_dump_json(),
                None if buffers is None else dict(buffers),
                base_seed,
                start,
                min(start + per_unit, m),
                t,
            ),
            weight=min(per_unit, m - start),
        )
        for start in range(0, m, per_unit)
    ]
    ran = run_units(executor or LocalExecutor(), store, group, units, description="jump")
    seconds = time.perf_counter() - started
    if ran:
        store.record_timing(group, "jump", seconds, accumulate=True)
    return JumpStoreSummary(
        group=group,
        members=m,
        snapshots=t,
        dim=d,
        ran_units=ran,
        skipped_units=len(units) - len(ran),
        seconds=seconds,
    )


def _digest(point: torch.Tensor) -> str:
    """A short content hash of the centre, so a group is never resumed from another optimum."""
    data = point.detach().float().cpu().contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def _jump_unit(
    out_dir: str,
    group: str,
    model: nn.Module,
    dataset: Any,
    center: torch.Tensor,
    options_json: str,
    buffers: Mapping[str, torch.Tensor] | None,
    base_seed: int,
    start: int,
    stop: int,
    t: int,
) -> None:
    """Retrain jumps ``[start, stop)`` (``t`` snapshots each) and write only their rows.

    Runs on any executor; the store is opened by path.
    """
    opts = JumpOptions.model_validate_json(options_json)
    store = AtlasStore.open(out_dir, create=False)
    samples = store.array(f"{group}/samples")  # opened once: a snapshot write is one chunk each

    def write(index: int, step: int, params: torch.Tensor) -> None:
        values = params.detach().float().cpu().numpy()
        for k, member in enumerate(range(start, stop)):
            samples[member * t + index] = values[k]

    run = jump_and_retrain(
        model,
        dataset,
        center,
        options=opts,
        buffers=buffers,
        base_seed=base_seed,
        on_snapshot=write,
        keep_snapshots=False,
        members=range(start, stop),
    )
    region = (slice(start * t, stop * t),)
    for name, values in jump_columns(run).items():
        where = "meta" if name in _META_COLUMNS else "metrics"
        store.write(f"{group}/{where}/{name}", region, values)
    store.write(f"{group}/final", (slice(start, stop),), run.final.float())
    store.write(f"{group}/diverged", (slice(start, stop),), run.diverged)
