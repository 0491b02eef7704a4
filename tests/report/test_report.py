"""The HTML report end to end: self-contained, escaped, deterministic, read from the store alone,
opening on the claims dashboard, and navigable by paper, experiment and figure.

Two stores are built once for the module: the synthetic run of :mod:`tests.report._stores`
(claims with and without evidence, steps with titles, paper figures and captions, a step's
parts, an interactive figure, training history), and a real one (a smoke-preset population, a
width probe on it, the toy wedge study) with a hand-made group of hostile strings.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
from pathlib import Path

import numpy as np
import pytest

from lossatlas.claims import load_claims
from lossatlas.config import WidthOptions, load_config
from lossatlas.errors import StoreError
from lossatlas.execute import LocalExecutor
from lossatlas.report import Section, build_report, is_plotly_fragment, report_sections
from lossatlas.report.bundle import available_bundles
from lossatlas.report.images import MAX_MEAN_ERROR
from lossatlas.report.sections import navigation
from lossatlas.stages import train_stage
from lossatlas.stages.output import Caption, StageOutput, describe_section, write_output
from lossatlas.stages.probes import ProbeRequest
from lossatlas.stages.width import width_stage
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges.toy import run_toy
from tests import _presets
from tests.report._stores import EVIL, EVIL_ESCAPED, build_store, evidence_claim, png

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


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("synthetic") / "run")


@pytest.fixture(scope="module")
def page(synthetic: Path) -> str:
    return build_report(synthetic).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store: train (smoke), a width probe, the toy study and a hostile group."""
    out = tmp_path_factory.mktemp("report") / "run"
    shrink = ["train.members=2", "train.epochs=2", "train.snapshot_every=0", "data.n_train=256"]
    config = load_config("smoke", overrides=shrink, schema=RunConfig)
    train_stage(config, out, executor=LocalExecutor(progress=False))
    width_stage(ProbeRequest(out=out), WidthOptions(n_directions=4))
    toy = run_toy(_TOY, 0)
    store = AtlasStore.open(out, create=False)
    describe_section(store, "wedges", title="Wedge model", text=EVIL, order=0, steps=["toy"])
    store.ensure_group("wedges/toy")
    write_output(
        store,
        "wedges/toy",
        StageOutput(figures={**toy.figures, **toy.interactive}, claims=toy.claims),
    )
    store.ensure_group("horoi/demo", attrs={"kind": EVIL})
    hostile = evidence_claim(
        "horoi.demo", "inconclusive", title=f"title {EVIL}", paper_figure=f"Fig. {EVIL}",
        statistic=f"statistic {EVIL}", figures=("demo.png",),
    )  # fmt: skip
    write_output(
        store,
        "horoi/demo",
        StageOutput(
            figures={"demo.png": png(0), "evil.html": f"<div>{EVIL}</div>".encode()},
            captions={"demo.png": Caption(f"caption {EVIL}", f"alt {EVIL}")},
            claims=[hostile],
            scalars={"label": EVIL, "bars": 2},
        ),
    )
    return out


@pytest.fixture(scope="module")
def real_page(real: Path) -> str:
    return build_report(real).read_text(encoding="utf-8")


def _without_plotly_js(text: str) -> str:
    """The page minus the inlined plotly.js bundle (whose text may mention URLs)."""
    return re.sub(r'<script id="plotly-bundle".*?</script>', "", text, flags=re.DOTALL)


def _section(sections: list[Section], kind: str, group: str = "") -> Section:
    return next(s for s in sections if s.kind == kind and (not group or s.group == group))


# --------------------------------------------------------------------------- the file


def test_report_is_written_beside_the_store(synthetic: Path, page: str) -> None:
    assert (synthetic / "report.html").is_file()
    assert page.startswith("<!DOCTYPE html>")
    assert not list(synthetic.glob(".report.html.*")), "the temporary file must be renamed"


@pytest.mark.parametrize("which", ["page", "real_page"])
def test_report_is_self_contained(which: str, request: pytest.FixtureRequest) -> None:
    text = _without_plotly_js(request.getfixturevalue(which))
    for pattern in (r"<script[^>]*\bsrc\s*=", r"<link\b", r"<img[^>]*src=\"https?:", r"@import"):
        assert re.search(pattern, text, re.IGNORECASE) is None, pattern
    assert "http://" not in text and "https://" not in text
    for value in re.findall(r'\b(?:src|href)="([^"]*)"', text):
        assert value.startswith(("data:", "#")), value[:60]
    assert "default-src 'none'" in text and "connect-src 'none'" in text


def test_title_names_the_run(page: str) -> None:
    # The store's config is the smoke preset's: the title says so, with its seed and date.
    title = re.search(r"<title>(.*?)</title>", page).group(1)  # type: ignore[union-attr]
    assert title.startswith("lossatlas · smoke preset · seed 0 · 20")
    assert title.endswith(" UTC")


def test_page_opens_on_the_dashboard(page: str) -> None:
    main = page[page.index("<main>") :]
    assert re.match(r'<main>\s*<section id="dashboard" class="dashboard">', main)
    # The opening lines set this run's setup beside each paper's.
    assert "<dt>This run</dt><dd>mlp (width 32, depth 2) on mnist1d" in page
    assert "<dt>Fort &amp; Jastrzebski (2019)</dt><dd>CIFAR-10 SimpleCNN, Adam</dd>" in page
    # Without a stated paper setup, the paper's claims' most common one stands in.
    assert "<dt>Horoi et al. (2022)</dt><dd>WRN-28-2 on CIFAR-10</dd>" in page


def test_every_claim_has_one_closed_row_with_a_verdict_badge(synthetic: Path, page: str) -> None:
    claims = load_claims(AtlasStore.open(synthetic, read_only=True))
    assert len(claims) == 5
    rows = re.findall(r'<details class="claim (\w+)" id="[^"]+" data-claim="([^"]+)"[^>]*>', page)
    assert sorted(cid for _, cid in rows) == sorted(c.id for c in claims)
    assert {cid: verdict for verdict, cid in rows} == {c.id: c.verdict for c in claims}
    assert not re.search(r'<details class="claim[^>]*\bopen\b', page), "rows start closed"
    for claim in claims:
        row = re.search(rf'data-claim="{re.escape(claim.id)}".*?</summary>', page, re.DOTALL)
        assert row and f'class="badge verdict {claim.verdict}"' in row.group(0), claim.id


def test_rows_group_by_paper_and_experiment_in_the_papers_order(synthetic: Path) -> None:
    dashboard = _section(report_sections(AtlasStore.open(synthetic, read_only=True)), "dashboard")
    assert [p.title for p in dashboard.papers] == [
        "Wedge model",
        "Geometry and topology",
        "Other claims",
    ]
    wedges = dashboard.papers[0]
    assert [e.title for e in wedges.experiments] == [
        "Tunnels between two optima",
        "Hyperparameters and tunnel width",
    ]
    assert [r.id for r in wedges.experiments[0].rows] == [
        "wedge.linear_barrier",
        "wedge.tunnel_two_blocks",
    ]
    assert dict(wedges.counts) == {"holds": 1, "fails": 1, "inconclusive": 1}
    assert dict(dashboard.counts) == {"holds": 2, "fails": 2, "inconclusive": 1}
    assert [r.id for r in dashboard.papers[2].experiments[0].rows] == ["probe.unlisted"]


def test_rows_show_the_evidence_and_degrade_without_it(synthetic: Path, page: str) -> None:
    dashboard = _section(report_sections(AtlasStore.open(synthetic, read_only=True)), "dashboard")
    rows = {r.id: r for p in dashboard.papers for e in p.experiments for r in e.rows}
    barrier = rows["wedge.linear_barrier"]
    assert barrier.title == "Linear barrier"  # derived from the id
    assert barrier.paper_figure == "Fort & Jastrzebski 2019, Fig. 3"  # the step's
    assert barrier.evidence is not None
    assert (barrier.evidence.estimate, barrier.evidence.ci95) == ("0.8", "[0.4, 1]")
    assert (barrier.evidence.replicates, barrier.evidence.control_verdict) == ("3", "fails")
    assert barrier.figure_anchor == next(a for n, _, a in barrier.figures if n == "tunnel_path.png")
    blocks = rows["wedge.tunnel_two_blocks"]
    assert blocks.title == "Deviations form two blocks"  # the claim's own
    assert blocks.paper_figure == "Fort & Jastrzebski 2019, Fig. 3 (right)"
    # A record written before the evidence engine: no estimate, everything else kept.
    old = rows["horoi.generalization_separation"]
    assert old.evidence is None and old.verdict == "fails"
    old_row = re.search(r'data-claim="horoi.generalization_separation".*?</details>', page, re.S)
    assert old_row and "no estimate recorded" in old_row.group(0)
    assert "predates the evidence fields" in old_row.group(0)
    # The per-paper line above the table counts every verdict.
    assert re.search(
        r"<strong>Wedge model</strong>: <span class=\"n holds\">1 hold</span> · "
        r"<span class=\"n fails\">1 fail</span> · <span class=\"n inconclusive\">1 "
        r"inconclusive</span>",
        page,
    )
    # A control that also says "holds" is flagged.
    lr = re.search(r'data-claim="wedge.lr_width".*?</summary>', page, re.S)
    assert lr and '<span class="ctl holds">holds (0.05)</span>' in lr.group(0)


# --------------------------------------------------------------------------- sections


def test_experiments_name_their_paper_figure_and_hide_their_parts(synthetic: Path) -> None:
    sections = report_sections(AtlasStore.open(synthetic, read_only=True))
    groups = [s.group for s in sections if s.kind == "experiment"]
    assert groups == ["wedges/tunnel", "wedges/sweep", "horoi/compare", "train"]
    tunnel = _section(sections, "experiment", "wedges/tunnel")
    assert tunnel.title == "Tunnels between two optima"
    assert tunnel.paper_figure == "Fort & Jastrzebski 2019, Fig. 3"
    assert tunnel.family_title == "Wedge model"
    layout = _section(sections, "layout")
    parts = next(row for row in layout.layout if row[2] == "wedges/sweep/parts/lr")
    assert parts[0] == "part of Hyperparameters and tunnel width"


def test_figures_carry_their_captions_and_alt_text(synthetic: Path, page: str) -> None:
    sections = report_sections(AtlasStore.open(synthetic, read_only=True))
    figures = {f.name: f for f in _section(sections, "experiment", "wedges/tunnel").figures}
    path = figures["tunnel_path.png"]
    assert path.caption.startswith("Loss along the straight line and the tunnel: look for")
    assert path.alt == "Two curves; the straight line peaks at 1.2 in the middle."
    assert path.title == "Loss along the straight line and the tunnel"
    assert f'alt="{path.alt}"' in page
    # Without a stored caption, the file name in words; the alt text is then the caption.
    cosines = figures["tunnel_cosines.png"]
    assert (cosines.caption, cosines.alt, cosines.title) == ("Tunnel cosines",) * 3
    compare = _section(sections, "experiment", "horoi/compare")
    embedding = next(f for f in compare.figures if f.name == "embedding.html")
    assert embedding.alt == embedding.caption  # alt "" falls back to the caption
    assert 'aria-label="Embedding of the samples: hover for each one' in page


def test_navigation_lists_papers_experiments_and_figures_not_paths(synthetic: Path) -> None:
    store = AtlasStore.open(synthetic, read_only=True)
    nav = navigation(report_sections(store))
    assert [p.title for p in nav] == ["Wedge model", "Geometry and topology", "Training"]
    assert [e.title for e in nav[0].experiments] == [
        "Tunnels between two optima",
        "Hyperparameters and tunnel width",
    ]
    # No entry is a storage path, whole or relative to its study ("sweep/parts/lr").
    paths = {p for p, _ in store.tree()}
    paths |= {p.split("/", 1)[1] for p in paths if "/" in p}
    titles = [p.title for p in nav]
    titles += [t for p in nav for e in p.experiments for t in (e.title, *(f for f, _ in e.figures))]
    assert "Loss along the straight line and the tunnel" in titles
    assert not any(t in paths or t.lower() in paths for t in titles), titles


def test_an_interactive_twin_of_a_static_figure_is_left_out(synthetic: Path, page: str) -> None:
    sweep = _section(
        report_sections(AtlasStore.open(synthetic, read_only=True)), "experiment", "wedges/sweep"
    )
    assert [f.name for f in sweep.figures] == ["width_vs_lr.png"]
    assert "interactive version is stored as width_vs_lr.html" in sweep.figures[0].note
    # Only the one interactive figure without a twin is on the page, drawn on demand.
    assert page.count('class="plotly-graph-div"') == 1
    assert '<script type="text/x-lossatlas-deferred">' in page
    assert not re.search(r"<script>\s*window.PLOTLYENV", page), "fragment scripts wait"


# --------------------------------------------------------------------------- size


@pytest.mark.parametrize(("kind", "build"), [("scatter", "basic"), ("surface", "gl3d")])
def test_plotly_is_inlined_once_in_the_smallest_build_that_serves(
    kind: str, build: str, tmp_path: Path
) -> None:
    out = build_store(tmp_path / kind, interactive=kind)
    html = build_report(out).read_text(encoding="utf-8")
    match = re.findall(
        r'<script id="plotly-bundle"[^>]*data-build="(\w+)"[^>]*>([^<]*)</script>', html
    )
    assert len(match) == 1 and match[0][0] == build
    code = gzip.decompress(base64.b64decode(match[0][1])).decode()
    chosen = next(b for b in available_bundles() if b.name == build)
    assert code == gzip.decompress(chosen.gzipped).decode()
    full = next(b for b in available_bundles() if b.name == "full")
    assert len(chosen.gzipped) < len(full.gzipped) and chosen.version == full.version


def test_every_stored_png_is_on_the_page_faithfully(real: Path, real_page: str) -> None:
    from PIL import Image

    store = AtlasStore.open(real, read_only=True)
    shown = {}
    for uri in re.findall(r'<img src="data:image/png;base64,([^"]+)"', real_page):
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB"), int)
        shown.setdefault(image.shape, []).append(image)
    stored = [p for p, _ in store.tree() if p.endswith(".png") and "/figures/" in p]
    assert len(stored) >= 6
    for path in stored:
        original = np.asarray(
            Image.open(io.BytesIO(store.load_bytes(path))).convert("RGB"), dtype=int
        )
        errors = [np.abs(i - original).mean() for i in shown.get(original.shape, [])]
        assert errors and min(errors) <= MAX_MEAN_ERROR, path


def test_every_store_string_is_escaped(real_page: str) -> None:
    assert EVIL not in real_page
    text = _without_plotly_js(real_page)
    # The citation, the claim's title, paper figure and statistic, the caption and alt text,
    # the group's attribute and result, and an HTML blob that is not plotly output.
    assert text.count(EVIL_ESCAPED) >= 8
    assert "does not look like plotly output" in text


def test_rendering_is_deterministic_and_leaves_the_store_alone(
    real: Path, real_page: str, tmp_path: Path
) -> None:
    store_dir = real / "atlas.zarr"
    before = {p: p.stat().st_mtime_ns for p in store_dir.rglob("*")}
    again = build_report(real, path=tmp_path / "copy.html", title=None)
    assert again == tmp_path / "copy.html"
    assert again.read_text(encoding="utf-8") == real_page
    assert {p: p.stat().st_mtime_ns for p in store_dir.rglob("*")} == before


def test_an_older_store_renders_by_its_paths(tmp_path: Path) -> None:
    # No section attributes, claims without evidence: titles come from the group paths.
    out = build_store(tmp_path / "old", describe=False)
    sections = report_sections(AtlasStore.open(out, read_only=True))
    compare = _section(sections, "experiment", "horoi/compare")
    assert compare.family_title == "horoi"
    assert _section(sections, "experiment", "wedges/tunnel").title == "Tunnels between two optima"
    assert compare.title == "B3/B4: topology of the two networks compared"  # its description
    build_report(out)


def test_a_store_without_claims_or_figures_renders(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path, config={"name": EVIL, "seed": 3, "data": {"name": "mnist1d"}})
    page = build_report(tmp_path, title=f"title {EVIL}").read_text(encoding="utf-8")
    assert EVIL not in page and f"title {EVIL_ESCAPED}" in page
    assert 'id="plotly-bundle"' not in page  # no interactive figure, no plotly.js
    assert "No claims in this store yet" in page
    sections = report_sections(AtlasStore.open(tmp_path, read_only=True))
    assert [s.kind for s in sections] == ["dashboard", "setup", "layout"]


def test_missing_store_is_one_line_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        build_report(tmp_path / "nowhere")
    assert "no atlas store" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "nowhere").exists()


def test_unwritable_target_is_one_line_store_error(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path / "run", config={"seed": 0})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot write") as info:
        build_report(tmp_path / "run", path=blocker / "report.html")
    assert "\n" not in str(info.value)


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
    assert section.figures[0].caption.startswith("Training curves: loss and accuracy")
    assert dict(section.results)["train_loss"].text.count("/") == 2
    build_report(tmp_path)
