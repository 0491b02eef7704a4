"""Probe stages: run one probe on one target and keep its arrays and figures in the store.

Each probe run is the group ``probes/<kind>/<name>``. Its fingerprint is the probe's options
plus the target, so asking for the same name with other options is refused rather than mixing
results, and re-running the same command finds the unit complete and recomputes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lossatlas.config import Config
from lossatlas.errors import StoreError
from lossatlas.stages.output import StageOutput, run_once
from lossatlas.stages.target import Target, target_from_checkpoint, target_from_store
from lossatlas.stages.train import open_store
from lossatlas.store import AtlasStore

__all__ = ["PROBES_GROUP", "ProbeRequest", "run_probe"]

PROBES_GROUP = "probes"


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
    compute: Callable[[Target, Any], StageOutput],
) -> tuple[str, bool]:
    """Run ``compute(target, options)`` once and store its output under ``probes/kind/name``.

    Returns ``(group, ran)``: ``ran`` is false when a completed result was already there.
    """
    store, target = request.open()
    group = f"{PROBES_GROUP}/{kind}/{name}"
    fingerprint = {"options": options.model_dump(mode="json"), "source": target.source}
    try:
        ran = run_once(
            store.out_dir, group, fingerprint, compute, target, options, attrs={"kind": kind}
        )
    except StoreError as exc:
        if "different config" not in str(exc):
            raise
        raise StoreError(f"{exc}; or give this probe run another --name") from exc
    return group, ran
