"""plotly.js builds: which traces each registers, and the smallest that serves a page."""

from __future__ import annotations

import gzip

from lossatlas.report.bundle import available_bundles, choose_bundle, trace_types
from tests.report._stores import scatter_html, surface_html


def test_the_builds_know_their_version_and_traces() -> None:
    bundles = {b.name: b for b in available_bundles()}
    assert {"basic", "gl3d", "full"} <= set(bundles)
    full = bundles["full"]
    assert full.version and all(b.version == full.version for b in bundles.values())
    assert {"scatter", "bar", "pie"} <= bundles["basic"].traces
    assert {"scatter", "surface", "scatter3d"} <= bundles["gl3d"].traces
    assert bundles["basic"].traces < full.traces and len(full.traces) > 30
    sizes = [len(b.gzipped) for b in available_bundles()]
    assert sizes == sorted(sizes) and sizes[-1] == len(full.gzipped)
    assert gzip.decompress(bundles["basic"].gzipped).startswith(b"/**\n* plotly.js (basic")


def test_the_smallest_build_that_serves_is_chosen() -> None:
    assert choose_bundle({"scatter"}).name == "basic"
    assert choose_bundle({"scatter", "surface"}).name == "gl3d"
    assert choose_bundle({"heatmap"}).name == "full"  # no vendored build has it
    assert choose_bundle({"*"}).name == "full"


def test_trace_types_are_read_from_the_fragment() -> None:
    assert trace_types(scatter_html().decode()) == ("scatter",)
    assert trace_types(surface_html().decode()) == ("surface",)
    broken = 'Plotly.newPlot("x", [{"type": "scatter"'
    assert trace_types(broken) == ("*",)
    assert trace_types('Plotly.newPlot("x", [{"x": [1]}], {})') == ("scatter",)
