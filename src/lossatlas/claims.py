"""Claims: the paper's statement and number beside ours, and whether it holds here.

Studies return :class:`Claim` records. They are stored in the atlas (group ``claims``, one
attribute per claim id); ``OUT/summary.json`` is rendered from the store
(:func:`lossatlas.stages.summary.write_summary`), so the store stays the single source of truth
and a re-run rewrites the summary identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lossatlas.store import AtlasStore

__all__ = ["CLAIMS_GROUP", "Claim", "ClaimMaker", "load_claims", "save_claims"]

CLAIMS_GROUP = "claims"


@dataclass(frozen=True)
class Claim:
    """One checkable statement of a paper, measured on our setup.

    Attributes:
        id: stable identifier such as ``"wedge.linear_barrier"``.
        statement: what the paper says, in one sentence.
        paper_value: the paper's figure (number, table or text, e.g. ``"≈ 0.6-1 within"``).
        paper_setup: what the paper measured on (e.g. ``"CIFAR-10 SimpleCNN, Adam"``).
        measured: our numbers, by name (JSON-serialisable; arrays become lists).
        holds: whether the statement holds on our setup; ``None`` when it cannot be decided.
        setup: what we measured on (dataset, model, sizes).
        criterion: the rule that decided ``holds``, stated before measuring.
        notes: anything a reader needs to interpret the comparison.
    """

    id: str
    statement: str
    paper_value: Any
    paper_setup: str
    measured: dict[str, Any]
    holds: bool | None
    setup: str
    criterion: str
    notes: str = ""
    figures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["measured"] = _jsonable(self.measured)
        record["paper_value"] = _jsonable(self.paper_value)
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Claim:
        return cls(**record)


@dataclass(frozen=True)
class ClaimMaker:
    """Makes the claims of one study on one setup: the paper's setup and ours filled in once.

    ``maker(id, statement, paper_value, measured, holds, criterion, notes=..., figures=...)``
    returns a :class:`Claim`; ``holds`` may be any truthy value or ``None`` (undecided).
    """

    paper_setup: str
    setup: str

    def __call__(
        self,
        cid: str,
        statement: str,
        paper_value: Any,
        measured: dict[str, Any],
        holds: Any,
        criterion: str,
        *,
        notes: str = "",
        figures: Sequence[str] = (),
    ) -> Claim:
        return Claim(
            id=cid,
            statement=statement,
            paper_value=paper_value,
            paper_setup=self.paper_setup,
            measured=measured,
            holds=None if holds is None else bool(holds),
            setup=self.setup,
            criterion=criterion,
            notes=notes,
            figures=list(figures),
        )


def _jsonable(value: Any) -> Any:
    """Numbers, arrays and tensors to plain JSON; non-finite floats to None (valid JSON)."""
    if hasattr(value, "detach"):  # torch tensors, without importing torch here
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return round(number, 6) if math.isfinite(number) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save_claims(store: AtlasStore, claims: list[Claim]) -> None:
    """Record ``claims`` in the store (replacing earlier records with the same id)."""
    store.ensure_group(CLAIMS_GROUP)
    store.update_attrs(CLAIMS_GROUP, {claim.id: claim.to_json() for claim in claims})


def load_claims(store: AtlasStore) -> list[Claim]:
    """All claims in the store, sorted by id."""
    if not store.has(CLAIMS_GROUP):
        return []
    attrs = store.attrs(CLAIMS_GROUP)
    return [
        Claim.from_json(attrs[key])
        for key in sorted(attrs)
        if isinstance(attrs[key], dict) and "statement" in attrs[key]
    ]
