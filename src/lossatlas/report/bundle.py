"""plotly.js for the page: the smallest build that draws every interactive figure on it.

Candidates are the partial builds kept in ``report/vendor`` (see its README) and the full build
that the installed ``plotly`` package ships. A build serves a page when it registers every
trace type the page's figures use and has the same plotly.js version as the installed package
(whose version serialised the figures). The chosen build goes on the page gzipped and base64
encoded, and the page unpacks it with the browser's ``DecompressionStream``: the full build is
4.8 MB as text but 2 MB this way.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["PlotlyBundle", "available_bundles", "choose_bundle", "trace_types"]

_VERSION = re.compile(r"plotly\.js(?: \([^)]*\))? v(\d+\.\d+\.\d+)")
_TRACE = re.compile(r'moduleType:"trace",name:"([a-z0-9]+)"')
_NEW_PLOT = re.compile(r"Plotly\.newPlot\(\s*\"[^\"]*\"\s*,\s*")
_HEADER_CHARS = 400


@dataclass(frozen=True)
class PlotlyBundle:
    """One build of plotly.js.

    Attributes:
        name: ``"basic"``, ``"gl3d"``, ... or ``"full"``.
        version: its plotly.js version (``"4.1.1"``).
        traces: the trace types it registers.
        gzipped: the minified code, gzipped.
    """

    name: str
    version: str
    traces: frozenset[str]
    gzipped: bytes

    @property
    def base64(self) -> str:
        """``gzipped`` as base64 text, to inline in the page."""
        return base64.b64encode(self.gzipped).decode("ascii")


def _describe(name: str, code: str, gzipped: bytes) -> PlotlyBundle:
    match = _VERSION.search(code[:_HEADER_CHARS])
    version = match.group(1) if match else ""
    return PlotlyBundle(name, version, frozenset(_TRACE.findall(code)), gzipped)


@functools.lru_cache(maxsize=1)
def available_bundles() -> tuple[PlotlyBundle, ...]:
    """The vendored partial builds and the installed full one, smallest first."""
    from plotly.offline import get_plotlyjs

    bundles = []
    vendor = resources.files("lossatlas.report") / "vendor"
    for entry in sorted(vendor.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("plotly-") and entry.name.endswith(".min.js.gz"):
            gzipped = entry.read_bytes()
            code = gzip.decompress(gzipped).decode("utf-8")
            name = entry.name[len("plotly-") : -len(".min.js.gz")]
            bundles.append(_describe(name, code, gzipped))
    full = get_plotlyjs()
    # mtime=0: the same page bytes on every render.
    bundles.append(_describe("full", full, gzip.compress(full.encode("utf-8"), 9, mtime=0)))
    return tuple(sorted(bundles, key=lambda b: len(b.gzipped)))


def choose_bundle(traces: set[str] | frozenset[str]) -> PlotlyBundle:
    """The smallest build that registers every type in ``traces`` and matches the installed
    plotly.js version; the full build when none does."""
    bundles = available_bundles()
    full = next(b for b in bundles if b.name == "full")
    if "*" in traces:
        return full
    for bundle in bundles:
        if bundle.version == full.version and set(traces) <= bundle.traces:
            return bundle
    return full


def trace_types(fragment: str) -> tuple[str, ...]:
    """The trace types a plotly fragment draws (``("scatter", "surface")``), in order of first
    use; a trace without a type is plotly's default, ``scatter``.

    The data argument of ``Plotly.newPlot`` is JSON; an unreadable one counts as needing
    everything (``("*",)``), which only the full build serves.
    """
    found: list[str] = []
    for match in _NEW_PLOT.finditer(fragment):
        try:
            data, _ = json.JSONDecoder().raw_decode(fragment, match.end())
        except ValueError:
            return ("*",)
        if not isinstance(data, list):
            return ("*",)
        for trace in data:
            kind = trace.get("type", "scatter") if isinstance(trace, dict) else "*"
            if kind not in found:
                found.append(str(kind))
    return tuple(found)
