"""The HTML report: self-contained, escaped, deterministic, and read from the store alone.

One small real store is built once for the module: a smoke-preset population, a width probe on
it, the toy wedge study (with an interactive plotly figure) and a hand-made group whose claim
and figure carry hostile strings.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from lossatlas.claims import Claim, load_claims
from lossatlas.config import WidthOptions, load_config
from lossatlas.errors import StoreError
from lossatlas.execute import LocalExecutor
from lossatlas.report import (
    Section,
    build_report,
    display_value,
    is_plotly_fragment,
    report_sections,
)
from lossatlas.stages import train_stage
from lossatlas.stages.output import StageOutput, describe_section, write_output
from lossatlas.stages.probes import ProbeRequest
from lossatlas.stages.width import width_stage
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges.toy import run_toy
from tests import _presets

# The toy study at its smallest: every figure (one interactive) and claim, in about a second.
_TOY = _presets.smoke_toy(
    interactive=True,
    variants=[],
    steps=50,
    trials=2,
    tunnel_steps=30,
    slice_resolution=21,
    directions=16,
    path_resolution=8,
)
EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _hostile_claim() -> Claim:
    return Claim(
        id="horoi.demo",
        statement=f"a statement with {EVIL}",
        paper_value={"H0 bars": [3, 4], "table": [{"net": "good", "bars": 2}]},
        paper_setup="CIFAR-10 WRN",
        measured={"bars": 2, "curve": list(np.linspace(0, 1, 30)), "nan": None},
        holds=None,
        setup="mnist1d MLP",
        criterion="bars < 3",
        notes=f"a note with {EVIL}",
        figures=["demo.png"],
    )


def _png(seed: int) -> bytes:
    from matplotlib.figure import Figure

    from lossatlas.plots import figure_to_png

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot(np.random.default_rng(seed).normal(size=5))
    return figure_to_png(fig, dpi=40)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store: train (smoke), a width probe, the toy study and a hostile group."""
    out = tmp_path_factory.mktemp("report") / "run"
    # The smoke preset, shrunk further: the report only needs a real population to read.
    shrink = ["train.members=2", "train.epochs=2", "train.snapshot_every=0", "data.n_train=256"]
    config = load_config("smoke", overrides=shrink, schema=RunConfig)
    train_stage(config, out, executor=LocalExecutor(progress=False))
    width_stage(ProbeRequest(out=out), WidthOptions(n_directions=4))
    toy = run_toy(_TOY, 0)
    assert toy.interactive, "the toy study should give an interactive figure"
    store = AtlasStore.open(out, create=False)
    # The studies describe their groups to the report as run_wedges / run_horoi do.
    describe_section(store, "wedges", title="Wedge model", text=EVIL, order=0, steps=["toy"])
    describe_section(store, "horoi", title="Geometry and topology", text="B", order=1)
    store.ensure_group("wedges/toy")
    write_output(
        store,
        "wedges/toy",
        StageOutput(figures={**toy.figures, **toy.interactive}, claims=toy.claims),
    )
    store.record_timing("wedges/toy", "toy", 1.5)
    store.ensure_group("horoi/demo", attrs={"kind": EVIL})
    write_output(
        store,
        "horoi/demo",
        StageOutput(
            figures={"demo.png": _png(0), "evil.html": f"<div>{EVIL}</div>".encode()},
            claims=[_hostile_claim()],
            scalars={"label": EVIL, "bars": 2},
        ),
    )
    return out


@pytest.fixture(scope="module")
def html(out: Path) -> str:
    return build_report(out).read_text(encoding="utf-8")


def _without_plotly_js(text: str) -> str:
    """The page minus the inlined plotly.js library (whose text may mention URLs)."""
    return re.sub(r'<script id="plotlyjs">.*?</script>', "", text, flags=re.DOTALL)


def _figure_paths(store: AtlasStore, media_type: str) -> list[str]:
    return [
        path
        for path, _ in store.tree()
        if "/figures/" in path and store.attrs(path).get("media_type") == media_type
    ]


def test_report_is_written_beside_the_store(out: Path, html: str) -> None:
    assert (out / "report.html").is_file()
    assert html.startswith("<!DOCTYPE html>")
    assert not list(out.glob(".report.html.*")), "the temporary file must be renamed away"


def test_report_is_self_contained(html: str) -> None:
    page = _without_plotly_js(html)
    for pattern in (r"<script[^>]*\bsrc\s*=", r"<link\b", r"<img[^>]*src=\"https?:", r"@import"):
        assert re.search(pattern, page, re.IGNORECASE) is None, pattern
    assert "http://" not in page and "https://" not in page
    # Every reference stays inside the page: images are data URIs, links are fragments.
    for value in re.findall(r'\b(?:src|href)="([^"]*)"', page):
        assert value.startswith(("data:", "#")), value[:60]
    assert "Content-Security-Policy" in page  # the browser also blocks any network fetch


def test_plotly_js_is_inlined_once_and_every_figure_appears(out: Path, html: str) -> None:
    from plotly.offline import get_plotlyjs

    assert html.count('<script id="plotlyjs">') == 1
    assert html.count(get_plotlyjs()[:300]) == 1
    store = AtlasStore.open(out, read_only=True)
    pngs = _figure_paths(store, "image/png")
    assert len(pngs) >= 6  # width, five toy figures, the demo figure
    for path in pngs:
        assert base64.b64encode(store.load_bytes(path)).decode() in html, path
    plotly_blobs = [
        p
        for p in _figure_paths(store, "text/html")
        if is_plotly_fragment(store.load_bytes(p).decode())
    ]
    assert plotly_blobs
    assert html.count('class="plotly-graph-div"') == len(plotly_blobs)


def test_claims_table_has_one_row_per_claim(out: Path, html: str) -> None:
    store = AtlasStore.open(out, read_only=True)
    claims = load_claims(store)
    assert len(claims) >= 4
    assert len(re.findall(r'<tr id="[^"]+" class="claim ', html)) == len(claims)
    section = next(s for s in report_sections(store) if s.kind == "claims")
    assert [r.id for r in section.claims] == [c.id for c in claims]
    expected = {True: ("holds", "✓"), False: ("fails", "✗"), None: ("undecided", "–")}
    for claim, row in zip(claims, section.claims, strict=True):
        assert (row.status, row.symbol) == expected[claim.holds]
        assert f'<tr id="{row.anchor}" class="claim {row.status}" data-claim="{row.id}">' in html
    overview = section_by_kind(report_sections(store), "overview")
    counts = {label: n for label, n, _ in overview.counts}
    assert sum(counts.values()) == len(claims)
    assert counts["undecided"] == 1


def section_by_kind(sections: list[Section], kind: str) -> Section:
    return next(s for s in sections if s.kind == kind)


def test_every_store_string_is_escaped(html: str) -> None:
    assert EVIL not in html
    page = _without_plotly_js(html)
    # The claim's statement and note, the group's attribute and result, and an HTML blob that
    # is not plotly output are all shown as text.
    assert page.count(EVIL_ESCAPED) >= 5
    assert "does not look like plotly output" in page


def test_sections_model_the_page(out: Path) -> None:
    sections = report_sections(AtlasStore.open(out, read_only=True))
    assert [s.kind for s in sections[:2]] == ["overview", "claims"]
    assert sections[-1].kind == "setup"
    groups = [s.group for s in sections if s.kind == "group"]
    assert groups == ["wedges/toy", "horoi/demo", "probes/width/default", "train"]
    anchors = [s.anchor for s in sections]
    assert len(set(anchors)) == len(anchors)

    train = next(s for s in sections if s.group == "train")
    assert [f.name for f in train.figures] == ["training_curves.png"]
    assert {name for name, _ in train.results} >= {"train_loss", "test_acc"}

    width = next(s for s in sections if s.group == "probes/width/default")
    assert [f.name for f in width.figures] == ["width_distribution.png"]
    assert dict(width.results)["mean"].kind == "text"

    toy = next(s for s in sections if s.group == "wedges/toy")
    assert toy.figures[-1].kind == "plotly"  # interactive figures come after the images
    assert {c.id for c in toy.claims} >= {"toy.tunnel", "toy.radial_probe"}
    cited = {f.name: [cid for cid, _ in f.claims] for f in toy.figures}
    assert "toy.radial_probe" in cited["toy_radial.png"]

    demo = next(s for s in sections if s.group == "horoi/demo")
    kinds = {f.name: f.kind for f in demo.figures}
    assert kinds == {"demo.png": "image", "evil.html": "text"}

    setup = sections[-1]
    assert {stage for _, stage, _ in setup.timings} >= {"train", "compute", "toy"}
    assert setup.details[0][0] == "Configuration (YAML)"


def test_rendering_is_deterministic_and_leaves_the_store_alone(
    out: Path, html: str, tmp_path: Path
) -> None:
    store_dir = out / "atlas.zarr"
    before = {p: p.stat().st_mtime_ns for p in store_dir.rglob("*")}
    again = build_report(out, path=tmp_path / "copy.html", title=None)
    assert again == tmp_path / "copy.html"
    assert again.read_text(encoding="utf-8") == html
    assert {p: p.stat().st_mtime_ns for p in store_dir.rglob("*")} == before


def test_a_store_without_claims_or_figures_renders(tmp_path: Path) -> None:
    config = {"name": EVIL, "seed": 3, "data": {"name": "mnist1d"}}
    AtlasStore.open(tmp_path, config=config)
    path = build_report(tmp_path, title=f"title {EVIL}")
    page = path.read_text(encoding="utf-8")
    assert EVIL not in page
    assert f"title {EVIL_ESCAPED}" in page
    assert 'id="plotlyjs"' not in page  # no interactive figure, no plotly.js
    assert "No claims in this store yet" in page
    sections = report_sections(AtlasStore.open(tmp_path, read_only=True))
    assert [s.kind for s in sections] == ["overview", "claims", "setup"]


def test_missing_store_is_one_line_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        build_report(tmp_path / "nowhere")
    assert "no atlas store" in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "nowhere").exists()


def test_unwritable_target_is_one_line_store_error(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path / "run", config={"seed": 0})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write") as info:
        build_report(tmp_path / "run", path=blocker / "report.html")
    assert "\n" not in str(info.value)


def test_display_value_shapes() -> None:
    assert display_value(0.123456789).text == "0.1235"
    assert display_value(None).text == "n/a"
    assert display_value(True).text == "true"
    mapping = display_value({"a": 1, "b": {"c": [1, 2]}})
    assert mapping.kind == "mapping"
    assert [k for k, _ in mapping.items] == ["a", "b"]
    records = display_value([{"x": 1}, {"x": 2, "y": "z"}])
    assert records.kind == "records" and records.columns == ("x", "y")
    matrix = display_value([[1.0, 0.5], [0.5, 1.0]])
    assert matrix.kind == "matrix" and matrix.text == "2×2 matrix"
    long = display_value(list(range(100)))
    assert "(100 values)" in long.text and long.full.startswith("[0, 1, 2")
    big = display_value([[0.0] * 40] * 40)
    assert big.kind == "text" and big.text == "40×40 matrix" and big.full


def test_plotly_fragments_are_recognised() -> None:
    import plotly.graph_objects as go

    from lossatlas.plots import plotly_to_html

    fragment = plotly_to_html(go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))).decode()
    assert is_plotly_fragment(fragment)
    assert not is_plotly_fragment(f"<div>{EVIL}</div>")
    assert not is_plotly_fragment(f"<div>{EVIL} Plotly.newPlot(</div>")
    external = fragment.replace("<script>", '<script src="x.js">', 1)
    assert not is_plotly_fragment(external)
    assert not is_plotly_fragment(fragment + "<img src=x onerror=alert(1)>")


def test_training_curves_survive_many_members_and_nan(tmp_path: Path) -> None:
    # 30 members (median and band instead of 30 lines), one diverged (NaN after epoch 2) and
    # one never written (all NaN): drawing must neither fail nor warn.
    store = AtlasStore.open(tmp_path, config={"seed": 0})
    loss = np.linspace(2.3, 0.4, 5)[None, :] + np.linspace(0, 0.3, 30)[:, None]
    loss[3, 2:] = np.nan
    loss[7] = np.nan
    write_output(
        store,
        "train",
        StageOutput(arrays={"history/train_loss": loss, "history/val_acc": 1 - loss / 3}),
    )
    section = next(s for s in report_sections(store) if s.group == "train")
    assert section.figures[0].body.startswith("data:image/png;base64,")
    assert dict(section.results)["train_loss"].text.count("/") == 2
    build_report(tmp_path)
