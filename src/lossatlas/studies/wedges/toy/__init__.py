"""A1: the toy n-wedge model and its three experiments (PAPERS.md A1 a-c), each with a claim.

* :func:`~.hyperplane.hyperplane_threshold` (a): optimise only ``θ ∈ R^d`` in ``P = θ M + P0``;
  success needs ``d`` at least ``D - n`` (the claim ``toy.hyperplane_threshold``, plus
  ``toy.hyperplane_threshold_robust`` over rotated / thick / random-width / other ``(D, n)``
  variants).
* :func:`~.tunnel.tunnel` (b): optimise split points of the straight segment between two
  optima inside the hyperplanes normal to it (PAPERS.md A3), on the toy (``toy.tunnel``).
* :func:`~.radial.radial_probe` (c): from a point on a wedge, the loss rises at nearly the same rate
  along every random direction (``toy.radial_probe``).

:func:`run_toy` runs all three. Everything is vectorised over trials (one batched tensor per
experiment), runs in float64 on the CPU, and draws every random number from
``make_generator(seed, "toy", <experiment>, ...)``, so the same ``(config, seed)`` gives the
same numbers.

Shared pieces (the result record, the optimisers) live in ``_common``; the landscape in
``landscape``.
"""

from __future__ import annotations

from lossatlas.stages.output import StageOutput
from lossatlas.studies.config import RunConfig
from lossatlas.studies.wedges.config import ToyConfig
from lossatlas.studies.wedges.toy._common import ToyResult
from lossatlas.studies.wedges.toy.hyperplane import hyperplane_threshold
from lossatlas.studies.wedges.toy.landscape import WedgeLandscape
from lossatlas.studies.wedges.toy.radial import radial_probe
from lossatlas.studies.wedges.toy.tunnel import tunnel

__all__ = [
    "ToyResult",
    "WedgeLandscape",
    "hyperplane_threshold",
    "radial_probe",
    "run_toy",
    "toy_step",
    "tunnel",
]


def run_toy(cfg: ToyConfig | None = None, seed: int = 0) -> ToyResult:
    """Run the three toy experiments (a-c) and merge their arrays, claims and figures.

    Claims: ``toy.hyperplane_threshold``, ``toy.hyperplane_threshold_robust`` (if
    ``cfg.variants``), ``toy.tunnel``, ``toy.radial_probe``.
    """
    cfg = cfg or ToyConfig()
    result = hyperplane_threshold(cfg, seed)
    result.update(tunnel(cfg, seed))
    result.update(radial_probe(cfg, seed))
    return result


def toy_step(out: str, config_json: str) -> StageOutput:
    """The A1 step: all three toy experiments, on the run's toy options and seed."""
    config = RunConfig.model_validate_json(config_json)
    result = run_toy(config.wedges.toy, seed=config.seed)
    return StageOutput(
        arrays=result.arrays, figures={**result.figures, **result.interactive}, claims=result.claims
    )
