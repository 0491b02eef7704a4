"""Probe stages: run one probe on one target and keep its arrays and figures in the store.

Each probe run is the group ``probes/<kind>/<name>``. Its fingerprint is the probe's options
plus the target, so asking for the same name with other options is refused rather than mixing
results, and re-running the same command finds the unit complete and recomputes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from lossatlas.config import Config
from lossatlas.errors import StoreError
from lossatlas.execute import LocalExecutor, Unit, run_units
from lossatlas.stages.target import Target, target_from_checkpoint, target_from_store
from lossatlas.stages.train import open_store
from lossatlas.store import AtlasStore

__all__ = ["PROBES_GROUP", "ProbeOutput", "ProbeRequest", "run_probe"]

PROBES_GROUP = "probes"
_RESULT_UNIT = "result"


@dataclass
class ProbeOutput:
    """What a probe produced: arrays for the store, scalars for attrs, rendered figures.

    ``figures`` maps a file name to bytes: ``*.png`` (matplotlib) or ``*.html`` (a plotly
    fragment without plotly.js).
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeRequest:
    """Where the probed point comes from: a member of the store's population, or a checkpoint.

    With a ``checkpoint``, ``config`` says which model and data it belongs to; the store in
    ``out`` is created for that config if it does not exist yet.
    """

    out: Path
    member: int = 0
    checkpoint: Path | None = None
    config: Config | None = None

    def open(self) -> tuple[AtlasStore, Target]:
        if self.checkpoint is not None:
            if self.config is None:
                raise StoreError("a checkpoint needs a config naming its model and data")
            return open_store(self.out, self.config), target_from_checkpoint(
                self.config, self.checkpoint
            )
        store = AtlasStore.open(self.out, create=False)
        return store, target_from_store(store, self.member)


def run_probe(
    request: ProbeRequest,
    kind: str,
    name: str,
    options: BaseModel,
    compute: Callable[[Target, Any], ProbeOutput],
) -> tuple[str, bool]:
    """Run ``compute(target, options)`` once and store its output under ``probes/kind/name``.

    Returns ``(group, ran)``: ``ran`` is false when a completed result was already there.
    """
    store, target = request.open()
    group = f"{PROBES_GROUP}/{kind}/{name}"
    fingerprint = {"options": options.model_dump(mode="json"), "source": target.source}
    try:
        store.ensure_group(group, attrs={"kind": kind, **fingerprint}, fingerprint=fingerprint)
    except StoreError as exc:
        raise StoreError(f"{exc}; or give this probe run another --name") from exc
    unit = Unit(
        id=_RESULT_UNIT,
        fn=_compute_and_write,
        args=(str(request.out), group, target, options, compute),
    )
    ran = run_units(LocalExecutor(progress=False), store, group, [unit], description=kind)
    return group, bool(ran)


def _compute_and_write(
    out: str,
    group: str,
    target: Target,
    options: BaseModel,
    compute: Callable[[Target, Any], ProbeOutput],
) -> None:
    store = AtlasStore.open(out, create=False)
    started = time.perf_counter()
    output = compute(target, options)
    for name, values in output.arrays.items():
        values = np.asarray(values)
        shape = values.shape or (1,)
        store.create_array(f"{group}/{name}", shape, values.dtype, shape)
        store.write(f"{group}/{name}", None, values.reshape(shape))
    for name, blob in output.figures.items():
        media = "image/png" if name.endswith(".png") else "text/html"
        store.save_bytes(f"{group}/figures/{name}", blob, media)
    store.update_attrs(group, {"result": output.scalars})
    store.record_timing(group, "compute", time.perf_counter() - started)
