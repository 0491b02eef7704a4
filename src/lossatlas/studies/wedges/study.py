"""The wedge study's steps in the order they run, their fingerprints, and :func:`run_wedges`.

:func:`run_wedges` trains the base population (the ``train`` stage), then runs six resumable
steps, each a group ``wedges/<step>`` holding its arrays, figures and claims:

==============  ====  ========================================================================
step            part  claims
==============  ====  ========================================================================
toy             A1    toy.hyperplane_threshold(_robust), toy.tunnel, toy.radial_probe
radial_cuts     A2    wedge.radial_cuts
tunnel          A3/4  wedge.linear_barrier, wedge.tunnel_low_loss, wedge.tunnel_two_blocks,
                      wedge.tunnel_label_changes, wedge.tunnel_short_dirs
connectors      A5    wedge.connector_low_loss, wedge.connector_short_dirs
sweep           A6    wedge.lr_width, wedge.lr_short_dirs, wedge.l2_width, wedge.dropout_width,
                      wedge.batch_width, wedge.width_scale
ensemble        A7    wedge.ensemble_vs_swa, wedge.ensemble_baselines
==============  ====  ========================================================================

Every claim's criterion is written down in its step before anything is measured; a claim that
does not hold on our setup is reported with its numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lossatlas.execute import Executor
from lossatlas.stages.output import Step, describe_section, run_step
from lossatlas.stages.train import train_stage
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig, check_replicates
from lossatlas.studies.wedges.connectors import connectors_step
from lossatlas.studies.wedges.cuts import radial_cuts_step
from lossatlas.studies.wedges.ensemble import ensemble_step
from lossatlas.studies.wedges.sweep import sweep_step
from lossatlas.studies.wedges.toy import toy_step
from lossatlas.studies.wedges.tunnel import tunnel_step

__all__ = [
    "CITATION",
    "TITLE",
    "WEDGE_EXPERIMENTS",
    "WEDGE_STEPS",
    "run_wedge_step",
    "run_wedges",
    "step_fingerprint",
]

TITLE = "Wedge model"
CITATION = (
    "Fort & Jastrzebski (2019), “Large Scale Structure of Neural Network Loss Landscapes”, "
    "NeurIPS 2019: the low-loss set as a union of high-dimensional wedges."
)


WEDGE_STEPS: dict[str, tuple[str, Step]] = {
    "toy": ("toy", toy_step),
    "radial_cuts": ("cuts", radial_cuts_step),
    "tunnel": ("tunnel", tunnel_step),
    "connectors": ("connect", connectors_step),
    "sweep": ("sweep", sweep_step),
    "ensemble": ("ensemble", ensemble_step),
}
"""step name -> (the WedgesConfig section that fingerprints it, the step function)."""

_PAPER = "Fort & Jastrzebski 2019"
WEDGE_EXPERIMENTS: dict[str, tuple[str, str]] = {
    "toy": ("Toy n-wedge model", f"{_PAPER}, §3"),
    "radial_cuts": ("Cutting planes through the origin", f"{_PAPER}, Fig. 1–2"),
    "tunnel": ("Tunnels between two optima", f"{_PAPER}, §4.2, Fig. 1, 3, 4"),
    "connectors": ("m-connectors between many optima", f"{_PAPER}, §4.3, Fig. 4"),
    "sweep": ("Hyperparameters and the regions explored", f"{_PAPER}, §4.4, Fig. 4–5"),
    "ensemble": ("Ensembling along a cyclic learning rate", f"{_PAPER}, §4.5, Fig. 6"),
}
"""step name -> (the experiment's title in the report, the part of the paper it reproduces)."""


def step_fingerprint(config: RunConfig, step: str) -> dict[str, Any]:
    """What a wedge step's results depend on: its options, the base run and the curvature."""
    section, _ = WEDGE_STEPS[step]
    core = config.model_dump(mode="json", include={"seed", "dtype", "data", "model", "train"})
    fingerprint = {
        "options": getattr(config.wedges, section).model_dump(mode="json"),
        "base": core,
    }
    if section != "toy":  # the network steps decide over replicates, counts at matched loss
        fingerprint["replicates"] = config.wedges.replicates
        fingerprint["match_tolerance"] = config.wedges.match_tolerance
    if section in {"tunnel", "connect", "sweep"}:
        fingerprint["short_dirs"] = config.wedges.short_dirs.model_dump(mode="json")
    return fingerprint


def run_wedges(
    config: RunConfig,
    out: str | Path,
    on_step: Callable[[str, bool], None] | None = None,
    executor: Executor | None = None,
) -> list[str]:
    """Train the base population and run every wedge step; returns the steps that ran now.

    Completed steps are skipped, so an interrupted study resumes where it stopped. Training
    units run on ``executor`` (default: the one ``config.execution`` names); each step fans its
    own parts out on the executor its config names.
    """
    _prepare(config, out, executor)
    ran = []
    config_json = config.model_dump_json()
    for name, (_, step) in WEDGE_STEPS.items():
        did = _run(out, name, step_fingerprint(config, name), step, config_json)
        if on_step is not None:
            on_step(name, did)
        if did:
            ran.append(name)
    return ran


def run_wedge_step(
    config: RunConfig, out: str | Path, step: str, executor: Executor | None = None
) -> bool:
    """Train the base population if needed, then run one wedge step; returns whether it ran."""
    _prepare(config, out, executor)
    _, function = WEDGE_STEPS[step]
    fingerprint = step_fingerprint(config, step)
    return _run(out, step, fingerprint, function, config.model_dump_json())


def _run(
    out: str | Path, name: str, fingerprint: dict[str, Any], step: Step, config_json: str
) -> bool:
    title, paper_figure = WEDGE_EXPERIMENTS[name]
    return run_step(
        out,
        f"wedges/{name}",
        fingerprint,
        step,
        config_json,
        title=title,
        paper_figure=paper_figure,
    )


def _prepare(config: RunConfig, out: str | Path, executor: Executor | None) -> None:
    """The base population, and the study's description for the report."""
    check_replicates(config)
    train_stage(config, out, executor=executor)
    describe_section(
        AtlasStore.open(out, create=False),
        "wedges",
        title=TITLE,
        text=CITATION,
        order=0,
        steps=list(WEDGE_STEPS),
    )
