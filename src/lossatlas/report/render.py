"""Rendering the page model to one self-contained HTML file, and :func:`build_report`.

The jinja2 template autoescapes every string that comes from the store (config values, claim
text, group names, notes). plotly.js is inlined once, and only when the page has an interactive
figure. Output is deterministic: the page carries no render timestamp (it shows the store's
creation time), so rendering the same store twice gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from lossatlas.location import Location, as_location, join_location, location_name, write_bytes
from lossatlas.report.model import Section, duration, study_links
from lossatlas.report.sections import package_version, report_sections
from lossatlas.store import AtlasStore

__all__ = ["REPORT_NAME", "build_report", "render_html"]

REPORT_NAME = "report.html"
_TEMPLATE = "report.html.j2"


def _environment() -> Environment:
    # Autoescape everything: the template only ever renders .html, and every string from the
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
    return env


def _break_opportunities(text: str) -> Markup:
    """Escape ``text``, then let long dotted or snake_case names wrap after ``.`` and ``_``."""
    # Not after a dot inside a number: "0.01" stays whole.
    return Markup(re.sub(r"(_|\.(?!\d))", r"\1<wbr>", str(escape(text))))


def _plotly_js() -> Markup:
    from plotly.offline import get_plotlyjs

    code = get_plotlyjs()
    # The bundle goes inside <script>; a literal "</script" would end it early.
    return Markup(code.replace("</script", "<\\/script"))


def render_html(sections: Iterable[Section], *, title: str) -> str:
    """Render ``sections`` to one HTML page (plotly.js inlined once, if any figure needs it)."""
    sections = list(sections)
    interactive = any(f.kind == "plotly" for s in sections for f in s.figures)
    toc = study_links(s for s in sections if s.kind == "group")
    template = _environment().get_template(_TEMPLATE)
    return template.render(
        title=title,
        sections=sections,
        toc=toc,
        plotly_js=_plotly_js() if interactive else None,
        version=package_version("lossatlas"),
    )


def build_report(
    out: str | Path, *, path: str | Path | None = None, title: str | None = None
) -> Location:
    """Render ``OUT/atlas.zarr`` to ``OUT/report.html`` (or ``path``) and return where it went.

    ``out`` (and ``path``) may be a folder or an fsspec URL; the result is a ``Path`` for a
    folder and the URL string for a URL. The store is opened read-only and nothing is
    recomputed. A local (or ``file://``) report is written to a temporary file beside it and
    renamed into place, and an object store receives it in one PUT, so a reader never sees half
    a report. Raises :class:`~lossatlas.errors.StoreError` (one line) when there is no store or
    the report cannot be written.
    """
    store = AtlasStore.open(out, read_only=True)
    target = join_location(store.out_dir, REPORT_NAME) if path is None else as_location(path)
    title = title or f"lossatlas report: {location_name(store.out_dir)}"
    html = render_html(report_sections(store), title=title)
    write_bytes(target, html.encode("utf-8"))
    return target
