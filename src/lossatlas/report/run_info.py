"""What names a run (preset, seed, when, device, version) and how its setup differs from the
papers': the page title, the opening paragraph and the comparison page's columns.

The store records the resolved config, not the preset it came from, so the preset is found by
comparing the config with each shipped preset (the seed and the runtime sections aside).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from lossatlas.claims import Claim
from lossatlas.config import RUNTIME_SECTIONS, available_presets, load_config
from lossatlas.errors import LossAtlasError
from lossatlas.location import location_name
from lossatlas.report.model import RunInfo
from lossatlas.report.values import clip
from lossatlas.store import AtlasStore

__all__ = ["config_changes", "match_preset", "run_info", "setup_paragraphs"]

_MAX_CHANGES = 5  # more settings changed than this and the config is "custom"
_SHOWN_CHANGES = 3
_IGNORED = {*RUNTIME_SECTIONS, "seed"}  # named separately, or not about the science


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{dotted key: value}``; lists are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        leaves.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def config_changes(config: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """The dotted settings of ``config`` whose value differs from ``reference``'s.

    Only the sections ``config`` has are compared (a train-only store has no study sections),
    and the seed and runtime sections (device, execution) are left out.
    """
    mine = {k: v for k, v in _leaves(config).items() if k.split(".", 1)[0] not in _IGNORED}
    theirs = _leaves({k: v for k, v in reference.items() if k in config})
    keys = sorted(set(mine) | {k for k in theirs if k.split(".", 1)[0] not in _IGNORED})
    return [k for k in keys if mine.get(k) != theirs.get(k)]


@functools.lru_cache(maxsize=1)
def _preset_configs() -> tuple[tuple[str, dict[str, Any]], ...]:
    from lossatlas.studies.config import RunConfig  # the schema every preset validates with

    presets = []
    for name in available_presets():
        try:
            presets.append((name, load_config(name, schema=RunConfig).model_dump(mode="json")))
        except LossAtlasError:  # a preset this version cannot read names no run
            continue
    return tuple(presets)


def match_preset(config: dict[str, Any]) -> tuple[str, list[str]]:
    """The shipped preset closest to ``config`` and the settings that differ from it;
    ``("", [])`` when every preset differs in more than a few settings."""
    best: tuple[str, list[str]] | None = None
    for name, preset in _preset_configs():
        changes = config_changes(config, preset)
        if best is None or len(changes) < len(best[1]):
            best = (name, changes)
    if best is None or len(best[1]) > _MAX_CHANGES:
        return "", []
    return best


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict (a stored attribute), else ``{}``."""
    return value if isinstance(value, dict) else {}


def _created(stamp: Any) -> str:
    """``2026-12-02T07:46:40+00:00`` -> ``2026-12-02 07:46 UTC`` (as stored if unparseable)."""
    if not isinstance(stamp, str) or not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.tzinfo else "")


def run_info(store: AtlasStore, out: str = "") -> RunInfo:
    """How the run in ``store`` is named (see :class:`RunInfo`)."""
    root = store.attrs()
    config, versions = _mapping(root.get("config")), _mapping(root.get("lossatlas"))
    preset, changed = match_preset(config) if config else ("", [])
    if preset and not changed:
        note = f"{preset} preset"
    elif preset:
        shown = ", ".join(changed[:_SHOWN_CHANGES]) + (", …" if len(changed) > 3 else "")
        plural = "s" if len(changed) > 1 else ""
        note = f"{preset} preset with {len(changed)} setting{plural} changed ({shown})"
    else:
        note = "custom config"
    seed = "" if config.get("seed") is None else str(config["seed"])
    created = _created(versions.get("created"))
    torch = str(versions.get("torch") or "")
    device = str(config.get("device") or "")
    device_text = f"{device} (torch {torch})" if device and torch else device or torch
    title = " · ".join(
        part for part in ("lossatlas", note, f"seed {seed}" if seed else "", created) if part
    )
    return RunInfo(
        out=out or location_name(store.out_dir),
        preset=preset,
        config_note=note,
        changed=tuple(changed),
        seed=seed,
        created=created,
        device=device_text,
        version=str(versions.get("version") or ""),
        title=title,
    )


def _this_setup(config: dict[str, Any]) -> str:
    """One sentence on what this run trains, from the config's core sections."""
    data, model = _mapping(config.get("data")), _mapping(config.get("model"))
    train = _mapping(config.get("train"))
    shape = ", ".join(f"{k} {model[k]}" for k in ("width", "depth") if model.get(k) is not None)
    net = f"{model.get('name', 'a model')}" + (f" ({shape})" if shape else "")
    dataset = str(data.get("name") or "its dataset")
    if data.get("n_train"):
        dataset += f" ({data['n_train']} training samples)"
    if data.get("label_noise"):
        dataset += f" with label noise {data['label_noise']}"
    parts: list[str] = []
    if train.get("members"):
        parts.append(f"{train['members']} members")
    if train.get("epochs"):
        parts.append(f"{train['epochs']} epochs")
    if train.get("optimizer"):
        lr = f" at LR {train['lr']}" if train.get("lr") is not None else ""
        parts.append(f"{train['optimizer']}{lr}")
    if train.get("batch_size"):
        parts.append(f"batch {train['batch_size']}")
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"{net} on {dataset}{detail}."


def setup_paragraphs(
    store: AtlasStore, papers: Iterable[tuple[str, str, str, list[Claim]]]
) -> tuple[tuple[str, str], ...]:
    """The dashboard's opening lines, ``(who, setup)``: this run's setup, then each paper's.

    Args:
        store: the store (its config says what this run trains).
        papers: ``(title, citation, stated paper setup or "", the paper's claims)`` per paper;
            without a stated setup the paper's most common claim ``paper_setup`` stands in.
    """
    config = _mapping(store.attrs().get("config"))
    lines = [("This run", _this_setup(config))] if config else []
    for title, citation, stated, claims in papers:
        setup = stated or _most_common(c.paper_setup for c in claims)
        if setup:
            # "Fort & Jastrzebski (2019), “Large Scale ...”" -> its authors and year
            name = clip(citation.split(",")[0], 60) if citation else title
            lines.append((name, setup))
    return tuple(lines)


def _most_common(values: Iterable[str]) -> str:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""
