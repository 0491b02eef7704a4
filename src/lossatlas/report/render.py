"""Rendering the page models to self-contained HTML files: :func:`build_report` (one run) and
:func:`build_comparison` (several runs side by side).

The jinja2 templates autoescape every string that comes from a store (config values, claim
text, group names, notes). plotly.js is inlined once, in the smallest build that draws the
page's interactive figures (:mod:`~.bundle`), and only when the page has one. Output is
deterministic: the page carries no render timestamp (it shows the store's creation time), so
rendering the same store twice gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from lossatlas.location import Location, as_location, join_location, write_bytes
from lossatlas.report.bundle import choose_bundle
from lossatlas.report.compare import Comparison, compare_runs
from lossatlas.report.figures import DEFERRED_SCRIPT
from lossatlas.report.model import VERDICT_SYMBOLS, Section
from lossatlas.report.run_info import run_info
from lossatlas.report.sections import navigation, package_version, report_sections
from lossatlas.report.values import duration
from lossatlas.store import AtlasStore

__all__ = [
    "COMPARISON_NAME",
    "REPORT_NAME",
    "build_comparison",
    "build_report",
    "render_comparison",
    "render_html",
]

REPORT_NAME = "report.html"
COMPARISON_NAME = "comparison.html"


def _environment() -> Environment:
    # Autoescape everything: the templates only ever render .html, and every string from the
    # store must be escaped. StrictUndefined turns template typos into errors, not blank cells.
    env = Environment(
        loader=PackageLoader("lossatlas.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["seconds"] = duration
    env.filters["wbr"] = _break_opportunities
    env.globals.update(
        symbols=VERDICT_SYMBOLS, deferred=DEFERRED_SCRIPT, version=package_version("lossatlas")
    )
    return env


def _break_opportunities(text: str) -> Markup:
    """Escape ``text``, then let long dotted or snake_case names wrap after ``.`` and ``_``."""
    # Not after a dot inside a number: "0.01" stays whole.
    return Markup(re.sub(r"(_|\.(?!\d))", r"\1<wbr>", str(escape(text))))


def render_html(sections: Iterable[Section], *, title: str, where: str = "") -> str:
    """Render ``sections`` to one HTML page (plotly.js inlined once, if any figure needs it);
    ``where`` names the run's location in the header."""
    sections = list(sections)
    plotly = [f for s in sections for f in s.figures if f.kind == "plotly"]
    bundle = choose_bundle({t for f in plotly for t in f.traces}) if plotly else None
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title, sections=sections, nav=navigation(sections), plotly=bundle, where=where
    )


def build_report(
    out: str | Path, *, path: str | Path | None = None, title: str | None = None
) -> Location:
    """Render ``OUT/atlas.zarr`` to ``OUT/report.html`` (or ``path``) and return where it went.

    ``out`` (and ``path``) may be a folder or an fsspec URL; the result is a ``Path`` for a
    folder and the URL string for a URL. The store is opened read-only and nothing is
    recomputed. The title names the run (preset, seed, when) unless ``title`` is given. A
    local (or ``file://``) report is written to a temporary file beside it and renamed into
    place, and an object store receives it in one PUT, so a reader never sees half a report.
    Raises :class:`~lossatlas.errors.StoreError` (one line) when there is no store or the
    report cannot be written.
    """
    store = AtlasStore.open(out, read_only=True)
    target = join_location(store.out_dir, REPORT_NAME) if path is None else as_location(path)
    info = run_info(store, str(out))
    html = render_html(report_sections(store), title=title or info.title, where=info.out)
    write_bytes(target, html.encode("utf-8"))
    return target


def render_comparison(comparison: Comparison) -> str:
    """The comparison page of :func:`~.compare.compare_runs` as HTML."""
    template = _environment().get_template("compare.html.j2")
    return template.render(title=comparison.title, c=comparison)


def build_comparison(outs: Sequence[str | Path], path: str | Path) -> Location:
    """Compare the runs in ``outs`` (see :func:`~.compare.compare_runs`) and write the page to
    ``path`` (a file or an fsspec URL); returns where it went. Every store is opened
    read-only. Raises :class:`~lossatlas.errors.StoreError` (one line) for a missing store or
    an unwritable target, before anything is written."""
    comparison = compare_runs(outs)
    target = as_location(path)
    write_bytes(target, render_comparison(comparison).encode("utf-8"))
    return target
