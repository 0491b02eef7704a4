"""Claims: the paper's statement and number beside ours, and whether it holds here.

A claim carries a ``verdict`` (``holds``, ``fails`` or ``inconclusive``) and the ``evidence``
that decided it: the deciding estimate, its 95% interval over replicates, the threshold, the
number of replicates and a control (the same test on data without the effect). This is the
record of ``../shared/CLAIMS.md``; ``holds`` stays for compatibility (true, false, or null for
inconclusive).

Studies return :class:`Claim` records. They are stored in the atlas (group ``claims``, one
attribute per claim id); ``OUT/summary.json`` is rendered from the store
(:func:`lossatlas.stages.summary.write_summary`), so the store stays the single source of truth
and a re-run rewrites the summary identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from lossatlas.store import AtlasStore

__all__ = [
    "CLAIMS_GROUP",
    "Claim",
    "ClaimMaker",
    "Control",
    "Decision",
    "Evidence",
    "Verdict",
    "load_claims",
    "save_claims",
    "verdict_of",
]

CLAIMS_GROUP = "claims"

Verdict = Literal["holds", "fails", "inconclusive"]
"""What a claim's test decided; ``inconclusive`` when the interval straddles the threshold, the
instrument cannot resolve the effect, or an optimisation did not converge (CLAIMS.md)."""

VERDICTS: tuple[str, ...] = get_args(Verdict)


def verdict_of(holds: bool | None) -> Verdict:
    """The verdict that a ``holds`` value means: true, false, or ``None`` (inconclusive)."""
    return "inconclusive" if holds is None else ("holds" if holds else "fails")


def _holds_of(verdict: str) -> bool | None:
    return None if verdict == "inconclusive" else verdict == "holds"


@dataclass(frozen=True)
class Control:
    """The claim's test run on data that lacks the effect (a negative control).

    Attributes:
        name: what the control is (e.g. ``"widths with the LR labels permuted"``).
        estimate: the control's value of the deciding statistic.
        verdict: what the same decision says on it; a sound test says ``fails`` here.
        details: anything else worth keeping (the null's 95% range, its draws, ...).
    """

    name: str
    estimate: float | None
    verdict: Verdict
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evidence:
    """What decided a claim.

    Attributes:
        statistic: what ``estimate`` is, in words (``"descriptive: ..."`` for a claim with no
            paper number to test against).
        estimate: the number that decides.
        ci95: its 95% interval over the replicates (``None`` with a single replicate).
        threshold: the value ``estimate`` is compared with.
        replicates: independent units behind the estimate (base seeds, networks, pairs).
        control: the same test on data without the effect.
        resolution: the smallest distance from ``threshold`` the instrument resolves (CLAIMS.md
            rule 5), in the units of ``estimate``; an estimate closer to the threshold than
            this is ``inconclusive`` whatever its interval. ``None`` where the instrument's
            error is already inside the interval (or is exact).
    """

    statistic: str
    estimate: float | None
    ci95: tuple[float, float] | None
    threshold: float | None
    replicates: int
    control: Control | None = None
    resolution: float | None = None

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Evidence:
        control = record.get("control")
        ci = record.get("ci95")
        return cls(
            statistic=str(record.get("statistic", "")),
            estimate=record.get("estimate"),
            ci95=None if ci is None else (ci[0], ci[1]),
            threshold=record.get("threshold"),
            replicates=int(record.get("replicates", 1)),
            control=None if not isinstance(control, dict) else Control(**control),
            resolution=record.get("resolution"),
        )


@dataclass(frozen=True)
class Decision:
    """What a claim's decision function returns: the verdict and the evidence behind it."""

    verdict: Verdict
    evidence: Evidence

    @property
    def holds(self) -> bool | None:
        """``True`` / ``False`` / ``None`` (inconclusive), as :attr:`Claim.holds`."""
        return _holds_of(self.verdict)


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
            Kept for compatibility: it always agrees with ``verdict``.
        setup: what we measured on (dataset, model, sizes).
        criterion: the rule that decided ``holds``, stated before measuring.
        notes: anything a reader needs to interpret the comparison.
        figures: file names of the figures that show it.
        verdict: ``holds``, ``fails`` or ``inconclusive`` (default: what ``holds`` says).
        evidence: what decided it (:class:`Evidence`); ``None`` in records written before the
            evidence engine.
        title: a short title for the report's dashboard row (``""``: the report derives one
            from the id).
        paper_figure: the figure or table of the paper the claim is read from, e.g.
            ``"Fort & Jastrzebski 2019, Fig. 4"`` (``""``: the report uses its step's).
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
    verdict: Verdict | None = None
    evidence: Evidence | None = None
    title: str = ""
    paper_figure: str = ""

    def __post_init__(self) -> None:
        if self.verdict is None:
            object.__setattr__(self, "verdict", verdict_of(self.holds))
        elif self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict {self.verdict!r} is not one of {VERDICTS}")
        elif _holds_of(self.verdict) != self.holds:
            raise ValueError(
                f"claim {self.id}: holds={self.holds} contradicts verdict {self.verdict!r}"
            )

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["measured"] = _jsonable(self.measured)
        record["paper_value"] = _jsonable(self.paper_value)
        record["evidence"] = _jsonable(record["evidence"])
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Claim:
        record = dict(record)
        evidence = record.pop("evidence", None)
        return cls(
            **record, evidence=Evidence.from_json(evidence) if isinstance(evidence, dict) else None
        )


@dataclass(frozen=True)
class ClaimMaker:
    """Makes the claims of one study on one setup: the paper's setup and ours filled in once.

    ``maker(id, statement, paper_value, measured, decision, criterion, notes=..., figures=...)``
    returns a :class:`Claim`. ``decision`` is a :class:`Decision` (the verdict and its evidence);
    a bare truth value or ``None`` is accepted for claims without evidence.
    """

    paper_setup: str
    setup: str

    def __call__(
        self,
        cid: str,
        statement: str,
        paper_value: Any,
        measured: dict[str, Any],
        decision: Decision | Any,
        criterion: str,
        *,
        notes: str = "",
        figures: Sequence[str] = (),
    ) -> Claim:
        if isinstance(decision, Decision):
            holds, verdict, evidence = decision.holds, decision.verdict, decision.evidence
        else:
            holds = None if decision is None else bool(decision)
            verdict, evidence = verdict_of(holds), None
        return Claim(
            id=cid,
            statement=statement,
            paper_value=paper_value,
            paper_setup=self.paper_setup,
            measured=measured,
            holds=holds,
            setup=self.setup,
            criterion=criterion,
            notes=notes,
            figures=list(figures),
            verdict=verdict,
            evidence=evidence,
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
