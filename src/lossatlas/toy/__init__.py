"""The toy n-wedge landscape (PAPERS.md A1) and its three experiments.

The landscape is cheap and analytic (no network, no data), so the wedge paper's geometric
claims can be checked in seconds: the random-hyperplane threshold ``d_lim = D − n``, low-loss
tunnels between optima on different wedges, and the near-isotropic rise of the loss around a
point on a wedge.
"""

from lossatlas.toy.experiments import (
    ToyConfig,
    ToyResult,
    ToyVariant,
    hyperplane_threshold,
    radial_probe,
    run_toy,
    tunnel,
)
from lossatlas.toy.wedges import WedgeLandscape

__all__ = [
    "ToyConfig",
    "ToyResult",
    "ToyVariant",
    "WedgeLandscape",
    "hyperplane_threshold",
    "radial_probe",
    "run_toy",
    "tunnel",
]
