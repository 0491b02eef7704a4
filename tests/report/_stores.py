"""Small synthetic stores for the report tests: two "papers", steps written through
``run_step`` with titles, paper figures and captions, claims with and without evidence, a
step's parts, an interactive figure and training history.

Everything here is seeded and tiny; a store builds in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lossatlas.claims import Claim, Control, Evidence, save_claims
from lossatlas.stages.output import Caption, StageOutput, describe_section, run_step, write_output
from lossatlas.store import AtlasStore
from tests import _presets

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"

_HOLDS = {"holds": True, "fails": False, "inconclusive": None}


def evidence_claim(
    cid: str,
    verdict: str,
    *,
    estimate: float = 0.8,
    ci: tuple[float, float] | None = (0.4, 1.0),
    threshold: float = 0.0,
    replicates: int = 3,
    control: str | None = "fails",
    figures: tuple[str, ...] = (),
    title: str = "",
    paper_figure: str = "",
    statistic: str = "Spearman rho between LR and width",
) -> Claim:
    """A claim with evidence, as the evidence engine records them (CLAIMS.md)."""
    return Claim(
        id=cid,
        statement=f"statement of {cid}",
        paper_value={"rho": 1.0},
        paper_setup="CIFAR-10 SimpleCNN, Adam",
        measured={"rho": estimate, "per_seed": [0.5, 0.8, 1.0]},
        holds=_HOLDS[verdict],
        setup="mnist1d MLP",
        criterion="holds if the CI lies above the threshold",
        figures=list(figures),
        verdict=verdict,  # type: ignore[arg-type]
        evidence=Evidence(
            statistic=statistic,
            estimate=estimate,
            ci95=ci,
            threshold=threshold,
            replicates=replicates,
            control=None
            if control is None
            else Control("LR labels permuted", 0.05, control, {"null_95": [-0.3, 0.3]}),  # type: ignore[arg-type]
        ),
        title=title,
        paper_figure=paper_figure,
    )


def old_claim(cid: str, holds: bool | None, figures: tuple[str, ...] = ()) -> Claim:
    """A claim as stores before the evidence engine hold it: no verdict field, no evidence."""
    record = {
        "id": cid,
        "statement": f"old statement of {cid}",
        "paper_value": "qualitative",
        "paper_setup": "WRN-28-2 on CIFAR-10",
        "measured": {"difference": 22.3, "range": [1, 2, 3]},
        "holds": holds,
        "setup": "mnist1d MLP",
        "criterion": "difference > range",
        "notes": "",
        "figures": list(figures),
    }
    return Claim.from_json(json.loads(json.dumps(record)))


def png(seed: int, size: tuple[float, float] = (2.0, 2.0)) -> bytes:
    """A tiny matplotlib PNG (one random line)."""
    from matplotlib.figure import Figure

    from lossatlas.plots import figure_to_png

    fig = Figure(figsize=size)
    fig.add_subplot().plot(np.random.default_rng(seed).normal(size=5))
    return figure_to_png(fig, dpi=40)


def scatter_html() -> bytes:
    import plotly.graph_objects as go

    from lossatlas.plots import plotly_to_html

    return plotly_to_html(go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 0, 2], mode="markers")))


def surface_html() -> bytes:
    import plotly.graph_objects as go

    from lossatlas.plots import plotly_to_html

    z = np.add.outer(np.linspace(-1, 1, 6) ** 2, np.linspace(-1, 1, 5) ** 2)
    return plotly_to_html(go.Figure(go.Surface(z=z)))


# Step functions (top-level, as run_step requires): out, config_json -> StageOutput.


def tunnel_step(out: str, config_json: str) -> StageOutput:
    return StageOutput(
        scalars={"barrier": 1.25},
        figures={"tunnel_path.png": png(1), "tunnel_cosines.png": png(2)},
        captions={
            "tunnel_path.png": Caption(
                "Loss along the straight line and the tunnel: look for the wall on the line.",
                "Two curves; the straight line peaks at 1.2 in the middle.",
            ),
        },
        claims=[
            evidence_claim("wedge.linear_barrier", "holds", figures=("tunnel_path.png",)),
            evidence_claim(
                "wedge.tunnel_two_blocks",
                "inconclusive",
                ci=(-0.1, 0.9),
                figures=("tunnel_cosines.png",),
                title="Deviations form two blocks",
                paper_figure="Fort & Jastrzebski 2019, Fig. 3 (right)",
            ),
        ],
    )


def sweep_step(out: str, config_json: str) -> StageOutput:
    store = AtlasStore.open(out, create=False)
    # A fanned-out part: results of its own, but no section of its own.
    store.ensure_group("wedges/sweep/parts/lr", units=False)
    write_output(store, "wedges/sweep/parts/lr", StageOutput(scalars={"final_width": [4.9, 5.8]}))
    return StageOutput(
        arrays={"lr/width": np.linspace(4.0, 6.0, 4)},
        figures={"width_vs_lr.png": png(3), "width_vs_lr.html": scatter_html()},
        claims=[
            evidence_claim(
                "wedge.lr_width", "fails", estimate=-0.2, ci=(-0.6, 0.1), control="holds",
                figures=("width_vs_lr.png",),
            )
        ],
    )  # fmt: skip


def compare_step(out: str, config_json: str, interactive: str = "scatter") -> StageOutput:
    html = surface_html() if interactive == "surface" else scatter_html()
    return StageOutput(
        figures={"topology.png": png(4), "embedding.html": html},
        captions={"embedding.html": ("Embedding of the samples: hover for each one's loss.", "")},
        claims=[old_claim("horoi.generalization_separation", False, ("topology.png",))],
    )


def _config() -> dict[str, Any]:
    """The smoke preset's config, as ``lossatlas run --preset smoke`` records it."""
    return _presets.smoke().model_dump(mode="json")


def build_store(
    out: Path,
    *,
    interactive: str = "scatter",
    config: dict[str, Any] | None = None,
    describe: bool = True,
) -> Path:
    """The synthetic run (see the module docstring) in ``out``; returns ``out``."""
    store = AtlasStore.open(out, config=_config() if config is None else config)
    if describe:
        describe_section(
            store, "wedges", title="Wedge model",
            text="Fort & Jastrzebski (2019), “Large Scale Structure of Neural Network Loss "
            "Landscapes”, NeurIPS 2019.",
            order=0, steps=["tunnel", "sweep"], paper_setup="CIFAR-10 SimpleCNN, Adam",
        )  # fmt: skip
        describe_section(
            store, "horoi", title="Geometry and topology",
            text="Horoi et al. (2022), “Exploring the Geometry and Topology of Neural Network "
            "Loss Landscapes”, IDA 2022.",
            order=1, steps=["compare"],
        )  # fmt: skip
        describe_section(store, "train", title="Training", text="The trained population.", order=2)
    config_json = "{}"
    run_step(
        out, "wedges/tunnel", {"step": "tunnel"}, tunnel_step, config_json,
        title="Tunnels between two optima", paper_figure="Fort & Jastrzebski 2019, Fig. 3",
    )  # fmt: skip
    run_step(
        out, "wedges/sweep", {"step": "sweep"}, sweep_step, config_json,
        title="Hyperparameters and tunnel width", paper_figure="Fort & Jastrzebski 2019, Fig. 5",
    )  # fmt: skip
    run_step(
        out, "horoi/compare", {"step": "compare", "interactive": interactive}, compare_step,
        config_json, key={"interactive": interactive},
        attrs={"description": "B3/B4: topology of the two networks compared"},
    )  # fmt: skip
    history = np.linspace(2.3, 0.5, 6)[None, :] + np.arange(3)[:, None] * 0.05
    write_output(
        store,
        "train",
        StageOutput(
            arrays={
                "history/train_loss": history,
                "history/test_loss": history + 0.2,
                "history/train_acc": 1.0 - history / 3,
                "diverged": np.zeros(3, dtype=bool),
            }
        ),
    )
    # A claim that no group lists.
    save_claims(store, [evidence_claim("probe.unlisted", "holds", control=None, ci=None)])
    return out
