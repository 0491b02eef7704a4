"""What the three toy experiments share: their result record and their optimisers.

Optimisers (chosen for the toy, where the loss is a distance: its gradient has norm ~1
everywhere off the wedges, so a fixed step would rattle around the minimum forever):

* plain descent (hyperplane coordinates, tunnel endpoints, probe points): Adam, learning rate
  ``lr * init_scale`` cosine-decayed to 0 over ``steps``. Adam rescales each coordinate, which
  copes with the badly conditioned random bases ``M`` at ``d = D - n``.
* tunnel split points: plain gradient descent with the gradient projected onto the hyperplane
  normal to ``u`` and the same cosine decay. Adam is *not* used there: its per-coordinate
  rescaling would turn a projected gradient into a step with a component along ``u``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from lossatlas.claims import Claim
from lossatlas.studies.wedges.config import ToyConfig, ToyVariant
from lossatlas.studies.wedges.toy.landscape import WedgeLandscape

__all__ = [
    "DTYPE",
    "PAPER_SETUP",
    "ToyResult",
    "adam_descent",
    "as_numpy",
    "cosine_lr",
    "landscape_of",
    "main_landscape",
    "projected_descent",
    "with_threads",
]

PAPER_SETUP = "toy n-wedge model (paper §3)"
DTYPE = torch.float64


@dataclass
class ToyResult:
    """What a toy experiment returns.

    Attributes:
        arrays: named numpy arrays (shapes in each experiment's docstring).
        claims: the :class:`~lossatlas.claims.Claim` records.
        figures: file name -> PNG bytes (e.g. ``"toy_hyperplane.png"``).
        interactive: file name -> plotly HTML fragment bytes (without plotly.js).
    """

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)
    interactive: dict[str, bytes] = field(default_factory=dict)

    def update(self, other: ToyResult) -> None:
        """Merge ``other`` into this result (later names win)."""
        self.arrays.update(other.arrays)
        self.claims.extend(other.claims)
        self.figures.update(other.figures)
        self.interactive.update(other.interactive)

    def claim(self, claim_id: str) -> Claim:
        """The claim with id ``claim_id`` (``KeyError`` if absent)."""
        for record in self.claims:
            if record.id == claim_id:
                return record
        raise KeyError(claim_id)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads (0: unchanged), restoring the setting afterwards.

    Toy tensors are tiny (at most a few hundred 20 x 20 matrices), so threading each op costs
    more than it saves; on a busy 2-core machine it measured ~15x slower than one thread.
    """
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def with_threads(
    experiment: Callable[[ToyConfig, int], ToyResult],
) -> Callable[[ToyConfig, int], ToyResult]:
    """Run an experiment ``(cfg, seed)`` under ``cfg.torch_threads`` intra-op threads."""

    @functools.wraps(experiment)
    def wrapper(cfg: ToyConfig, seed: int) -> ToyResult:
        with _torch_threads(cfg.torch_threads):
            return experiment(cfg, seed)

    return wrapper


def cosine_lr(lr: float, step: int, steps: int) -> float:
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))


def adam_descent(
    objective: Callable[[Tensor], Tensor], start: Tensor, *, steps: int, lr: float
) -> Tensor:
    """Minimise a batched objective (B, k) -> (B,) row by row; returns the final (B, k).

    One Adam instance on the whole (B, k) tensor is B independent Adams: the gradient of the
    summed objective splits into per-row gradients and Adam's update is elementwise.
    Coordinates with an identically zero gradient (masked hyperplane directions) never move.
    """
    x = start.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=lr)
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = cosine_lr(lr, step, steps)
        (grad,) = torch.autograd.grad(objective(x).sum(), x)
        x.grad = grad
        optimiser.step()
    return x.detach()


def projected_descent(
    objective: Callable[[Tensor], Tensor], start: Tensor, normal: Tensor, *, steps: int, lr: float
) -> Tensor:
    """Gradient descent on (T, k, D) points, each confined to the hyperplane normal to ``u``.

    ``normal`` is (T, D) unit vectors; ``g <- g - (g·u) u`` before every step, so the points
    never move along ``u`` (up to rounding).
    """
    x = start.detach().clone()
    u = normal[:, None, :]
    for step in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x).sum(), x)
        grad = grad - (grad * u).sum(-1, keepdim=True) * u
        x = (x - cosine_lr(lr, step, steps) * grad).detach()
    return x


def as_numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def landscape_of(variant: ToyVariant, cfg: ToyConfig, seed: int) -> WedgeLandscape:
    """The landscape ``variant`` describes, with ``cfg``'s length scale and width spread."""
    return WedgeLandscape(
        variant.dim,
        variant.n_long,
        epsilon=variant.epsilon * cfg.init_scale,
        rotation=variant.rotation,
        widths=variant.widths,
        seed=seed,
        width_spread=cfg.width_spread,
        dtype=DTYPE,
    )


def main_landscape(cfg: ToyConfig, seed: int) -> WedgeLandscape:
    """The main landscape of ``cfg``."""
    return landscape_of(cfg.main_variant(), cfg, seed)
