"""Resumable steps of work whose results go into store groups.

A step computes a :class:`StageOutput` (arrays, scalars, rendered figures and claims) and
:func:`run_once` writes it under its group, then marks the group's single unit complete. Study
steps share one signature, :data:`Step` (``step(out, config_json, **key)``), and run through
:func:`run_step`. The
group's fingerprint (the step's options and inputs) makes a re-run with the same settings a
no-op and a re-run with other settings an error, never a silent mix.

A step whose work splits into independent pieces (sweep settings, connectors, curvature jobs,
grid chunks) hands them to :func:`run_parts` as :class:`Part` s: each part runs as one unit on
the configured executor (possibly a Ray worker), writes its arrays and scalars under its own
subgroup, and the step reads them all back with :func:`read_output` to make figures and claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lossatlas.claims import Claim, save_claims
from lossatlas.execute import Executor, LocalExecutor, Unit, run_units
from lossatlas.store import AtlasStore

__all__ = [
    "SECTION_ATTR",
    "Caption",
    "Part",
    "StageOutput",
    "Step",
    "describe_section",
    "describe_step",
    "read_output",
    "run_once",
    "run_parts",
    "run_step",
    "write_output",
]

_RESULT_UNIT = "result"


class Caption(NamedTuple):
    """What the report writes under a figure, and its text alternative.

    Attributes:
        caption: what the figure shows and what to look for in it (one or two sentences; the
            part before the first ``": "`` or ``". "`` titles the figure in the navigation).
        alt: what the figure shows, for readers who cannot see it (``""``: the caption).
    """

    caption: str
    alt: str = ""


@dataclass
class StageOutput:
    """What one step produced.

    Attributes:
        arrays: name -> array, stored under the group (names may contain ``/``).
        scalars: JSON-able numbers, stored in the group's ``result`` attribute.
        figures: file name -> bytes: ``*.png`` (matplotlib) or ``*.html`` (a plotly fragment
            without plotly.js), stored under ``figures/``.
        claims: claim records, stored in the ``claims`` group.
        captions: figure file name -> :class:`Caption` (or a plain ``(caption, alt)`` pair),
            stored as the ``caption`` and ``alt`` attributes of that figure's blob. Figures
            without one are captioned by their file name.
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    captions: dict[str, tuple[str, str]] = field(default_factory=dict)


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
        if name in output.captions:
            caption, alt = Caption(*output.captions[name])
            store.update_attrs(f"{group}/figures/{name}", {"caption": caption, "alt": alt})
    store.update_attrs(
        group,
        {
            "result": output.scalars,
            "arrays": sorted(output.arrays),
            # zarr arrays have at least one dimension; these were 0-d and read back as such.
            "scalar_arrays": sorted(n for n, v in output.arrays.items() if np.ndim(v) == 0),
            "claims": [c.id for c in output.claims],
        },
    )
    if output.claims:
        save_claims(store, output.claims)


def read_output(store: AtlasStore, group: str) -> StageOutput:
    """The arrays and scalars :func:`write_output` stored under ``group`` (not figures/claims)."""
    attrs = store.attrs(group)
    arrays = {name: store.read(f"{group}/{name}") for name in attrs.get("arrays", [])}
    for name in attrs.get("scalar_arrays", []):
        arrays[name] = arrays[name].reshape(())
    return StageOutput(arrays=arrays, scalars=dict(attrs.get("result") or {}))


@dataclass(frozen=True)
class Part:
    """One independent piece of a step: ``compute(*args) -> StageOutput``, named ``id``.

    ``compute`` must be a top-level function and ``args`` picklable (JSON strings of configs
    and the store's folder are the usual arguments), so the part can run on a Ray worker. Its
    figures and claims are ignored: the step that gathers the parts makes those.
    """

    id: str
    compute: Callable[..., StageOutput]
    args: tuple[Any, ...] = ()
    weight: float = 1.0


def run_parts(
    out: str | Path,
    group: str,
    parts: list[Part],
    executor: Executor,
    *,
    description: str = "",
) -> dict[str, StageOutput]:
    """Run the parts not yet complete on ``executor``; return every part's stored output.

    Each part's output lives in ``group/<id>`` and its marker in ``group/_units/<id>``, so an
    interrupted step resumes with only the missing parts, wherever they run.
    """
    store = AtlasStore.open(out, create=False)
    units = [
        Unit(
            id=part.id,
            fn=_compute_and_write,
            args=(str(out), f"{group}/{part.id}", part.compute, part.args),
            weight=part.weight,
        )
        for part in parts
    ]
    run_units(executor, store, group, units, description=description or group)
    return {part.id: read_output(store, f"{group}/{part.id}") for part in parts}


def run_once(
    out: str | Path,
    group: str,
    fingerprint: dict[str, Any],
    compute: Callable[..., StageOutput],
    *args: Any,
    attrs: dict[str, Any] | None = None,
    title: str = "",
    paper_figure: str = "",
) -> bool:
    """Run ``compute(*args)`` unless ``group`` already holds a complete result.

    Returns whether it ran. The store in ``out`` must exist. ``title`` and ``paper_figure``
    say how the report presents the group (see :func:`describe_step`); they are written even
    when the result is already complete, so an older store gains them without recomputing.
    """
    store = AtlasStore.open(out, create=False)
    store.ensure_group(group, attrs={**(attrs or {}), **fingerprint}, fingerprint=fingerprint)
    if title or paper_figure:
        describe_step(store, group, title=title, paper_figure=paper_figure)
    unit = Unit(id=_RESULT_UNIT, fn=_compute_and_write, args=(str(out), group, compute, args))
    return bool(run_units(LocalExecutor(progress=False), store, group, [unit], description=group))


Step = Callable[..., StageOutput]
"""A step of a study: ``step(out, config_json, **key) -> StageOutput``.

``out`` is the run folder (or URL) and ``config_json`` the whole run config as JSON, so a step
can run in any process; ``key`` names which piece of the study it computes (for example
``net="good", seed=1``) and holds only JSON-able values. (A ``Callable`` rather than a
``Protocol``: a protocol with ``**key`` would not admit steps that name their keys.)
"""


def run_step(
    out: str | Path,
    group: str,
    fingerprint: dict[str, Any],
    step: Step,
    config_json: str,
    *,
    key: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
    title: str = "",
    paper_figure: str = "",
) -> bool:
    """Run a study step once into ``group`` (see :func:`run_once`); returns whether it ran.

    ``title`` names the experiment in the report (e.g. ``"Tunnels between two optima"``) and
    ``paper_figure`` the figure or table of the paper it reproduces (e.g.
    ``"Fort & Jastrzebski 2019, Fig. 3"``); see :func:`describe_step`.
    """
    return run_once(
        out,
        group,
        fingerprint,
        _call_step,
        step,
        str(out),
        config_json,
        key or {},
        attrs=attrs,
        title=title,
        paper_figure=paper_figure,
    )


def _call_step(step: Step, out: str, config_json: str, key: dict[str, Any]) -> StageOutput:
    return step(out, config_json, **key)


def _compute_and_write(
    out: str, group: str, compute: Callable[..., StageOutput], args: tuple[Any, ...]
) -> None:
    started = time.perf_counter()
    output = compute(*args)
    store = AtlasStore.open(out, create=False)
    store.ensure_group(group, units=False)  # a part's own group; nobody else writes it
    write_output(store, group, output)
    store.record_timing(group, "compute", time.perf_counter() - started)


SECTION_ATTR = "section"
"""The attribute in which a group describes itself to the report: a top-level group (a study)
through :func:`describe_section`, a step's group through :func:`describe_step`."""


def describe_section(
    store: AtlasStore,
    group: str,
    *,
    title: str,
    text: str,
    order: int,
    steps: Sequence[str] = (),
    paper_setup: str = "",
) -> None:
    """Write how the report presents a top-level group: its title, one line of text (a study's
    citation, or what the group holds), its place on the page and its steps' order.

    ``paper_setup`` says what the paper measured on (``"CIFAR-10 SimpleCNN, Adam"``); the
    report's opening paragraph sets it beside this run's setup (``""``: the report takes the
    most common ``paper_setup`` of the group's claims). The report reads these instead of
    knowing the studies and stages by name.
    """
    store.ensure_group(group)
    section: dict[str, Any] = {"title": title, "text": text, "order": order, "steps": list(steps)}
    if paper_setup:
        section["paper_setup"] = paper_setup
    store.update_attrs(group, {SECTION_ATTR: section})


def describe_step(
    store: AtlasStore, group: str, *, title: str = "", paper_figure: str = ""
) -> None:
    """Write how the report presents one experiment (a step's group, e.g. ``wedges/tunnel``).

    Args:
        store: the atlas store (the group is created if missing).
        group: the step's group.
        title: the experiment's name in the report's navigation and heading
            (``""``: its description attribute, else its path in words).
        paper_figure: the figure or table of the paper the step reproduces, e.g.
            ``"Fort & Jastrzebski 2019, Fig. 4"``; the report shows it in the heading and in
            the claims dashboard (a claim's own ``paper_figure`` wins there).
    """
    store.ensure_group(group, units=False)
    current = store.attrs(group).get(SECTION_ATTR)
    section = dict(current) if isinstance(current, dict) else {}
    section.update({k: v for k, v in (("title", title), ("paper_figure", paper_figure)) if v})
    if section != current:
        store.update_attrs(group, {SECTION_ATTR: section})
