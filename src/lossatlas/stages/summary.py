"""``OUT/summary.json``: every claim in the store, rendered atomically next to it."""

from __future__ import annotations

import json
from pathlib import Path

from lossatlas.claims import Claim, load_claims
from lossatlas.location import Location, as_location, join_location, write_bytes
from lossatlas.store import AtlasStore

__all__ = ["SUMMARY_NAME", "claim_counts", "write_summary"]

SUMMARY_NAME = "summary.json"


def write_summary(store: AtlasStore, path: str | Path | None = None) -> Location:
    """Write ``OUT/summary.json`` (or ``path``) from the claims in the store, atomically.

    Returns where it was written: a ``Path`` for a folder, the URL string when the out
    location (or ``path``) is an fsspec URL.
    """
    target = join_location(store.out_dir, SUMMARY_NAME) if path is None else as_location(path)
    claims = load_claims(store)
    summary = {
        "lossatlas": store.attrs().get("lossatlas", {}),
        "config": store.attrs().get("config"),
        "counts": claim_counts(claims),
        "claims": [c.to_json() for c in claims],
    }
    text = json.dumps(summary, indent=2, sort_keys=False, allow_nan=False) + "\n"
    # A reader (or a kill) never sees half a summary: temp file + rename, or one whole upload.
    write_bytes(target, text.encode("utf-8"))
    return target


def claim_counts(claims: list[Claim]) -> dict[str, int]:
    """How many claims there are and how many hold, fail and are inconclusive.

    ``does_not_hold`` and ``undecided`` repeat ``fails`` and ``inconclusive`` under the names
    that summaries written before verdicts used.
    """
    fails = sum(c.verdict == "fails" for c in claims)
    inconclusive = sum(c.verdict == "inconclusive" for c in claims)
    return {
        "claims": len(claims),
        "holds": sum(c.verdict == "holds" for c in claims),
        "fails": fails,
        "inconclusive": inconclusive,
        "does_not_hold": fails,
        "undecided": inconclusive,
    }
