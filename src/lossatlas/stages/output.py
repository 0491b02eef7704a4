"""One resumable step of work whose results go into one store group.

A step computes a :class:`StageOutput` (arrays, scalars, rendered figures and claims) and
:func:`run_once` writes it under its group, then marks the group's single unit complete. The
group's fingerprint (the step's options and inputs) makes a re-run with the same settings a
no-op and a re-run with other settings an error, never a silent mix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lossatlas.execute import LocalExecutor, Unit, run_units
from lossatlas.store import AtlasStore
from lossatlas.studies.claims import Claim, save_claims

__all__ = ["StageOutput", "run_once", "write_output"]

_RESULT_UNIT = "result"


@dataclass
class StageOutput:
    """What one step produced.

    Attributes:
        arrays: name -> array, stored under the group (names may contain ``/``).
        scalars: JSON-able numbers, stored in the group's ``result`` attribute.
        figures: file name -> bytes: ``*.png`` (matplotlib) or ``*.html`` (a plotly fragment
            without plotly.js), stored under ``figures/``.
        claims: claim records, stored in the ``claims`` group.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)


def write_output(store: AtlasStore, group: str, output: StageOutput) -> None:
    """Write every part of ``output`` under ``group`` (claims go to the claims group)."""
    for name, values in output.arrays.items():
        values = np.asarray(values)
        shape = values.shape or (1,)
        store.create_array(f"{group}/{name}", shape, values.dtype, shape)
        store.write(f"{group}/{name}", None, values.reshape(shape))
    for name, blob in output.figures.items():
        media = "image/png" if name.endswith(".png") else "text/html"
        store.save_bytes(f"{group}/figures/{name}", blob, media)
    store.update_attrs(group, {"result": output.scalars, "claims": [c.id for c in output.claims]})
    if output.claims:
        save_claims(store, output.claims)


def run_once(
    out: str | Path,
    group: str,
    fingerprint: dict[str, Any],
    compute: Callable[..., StageOutput],
    *args: Any,
    attrs: dict[str, Any] | None = None,
) -> bool:
    """Run ``compute(*args)`` unless ``group`` already holds a complete result.

    Returns whether it ran. The store in ``out`` must exist.
    """
    store = AtlasStore.open(out, create=False)
    store.ensure_group(group, attrs={**(attrs or {}), **fingerprint}, fingerprint=fingerprint)
    unit = Unit(id=_RESULT_UNIT, fn=_compute_and_write, args=(str(out), group, compute, args))
    return bool(run_units(LocalExecutor(progress=False), store, group, [unit], description=group))


def _compute_and_write(
    out: str, group: str, compute: Callable[..., StageOutput], args: tuple[Any, ...]
) -> None:
    started = time.perf_counter()
    output = compute(*args)
    store = AtlasStore.open(out, create=False)
    write_output(store, group, output)
    store.record_timing(group, "compute", time.perf_counter() - started)
