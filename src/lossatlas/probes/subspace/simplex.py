"""Barycentric grids and uniform samples on the simplex of m + 1 points (paper A5)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lossatlas.data.batches import BatchAdapter
from lossatlas.evaluate import Autocast, LossFn, Strategy
from lossatlas.params import Wrt
from lossatlas.probes.subspace._setup import make_evaluator, resolve_setup, to_numpy
from lossatlas.seeding import make_generator

__all__ = [
    "SimplexSurface",
    "dirichlet_samples",
    "evaluate_simplex",
    "simplex_grid",
    "simplex_weights",
]


@dataclass(eq=False, repr=False)
class SimplexSurface:
    """Loss and accuracy at points ``weights @ vertices`` of a simplex.

    Attributes:
        vertices: ``(m + 1, D)``.
        weights: ``(P, m + 1)`` barycentric coordinates (non-negative, rows sum to 1).
        loss, accuracy: ``(P,)``.
        meta: settings and timings.
    """

    vertices: Tensor
    weights: Tensor
    loss: Tensor
    accuracy: Tensor | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def m(self) -> int:
        """The simplex's dimension (``m + 1`` vertices)."""
        return self.vertices.shape[0] - 1

    def __repr__(self) -> str:
        return f"SimplexSurface(m={self.m}, points={self.weights.shape[0]})"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``vertices``, ``weights``, ``loss``, ``accuracy`` as numpy arrays."""
        arrays = {
            "vertices": to_numpy(self.vertices),
            "weights": to_numpy(self.weights),
            "loss": to_numpy(self.loss),
        }
        if self.accuracy is not None:
            arrays["accuracy"] = to_numpy(self.accuracy)
        return arrays


def simplex_weights(m: int, resolution: int) -> Tensor:
    """All barycentric points ``k / resolution`` of an ``m``-simplex: ``(P, m + 1)`` float64.

    ``P = C(resolution + m, m)``; every row is a composition of ``resolution`` into ``m + 1``
    non-negative parts (divided by ``resolution``), so the vertices (one-hot rows), edge points
    and the interior lattice are all included. Rows are in lexicographic order.
    """
    if m < 1 or resolution < 1:
        raise ValueError(f"need m >= 1 and resolution >= 1, got m={m}, resolution={resolution}")
    rows = []
    # Stars and bars: m bars among resolution + m slots split the stars into m + 1 parts.
    for bars in itertools.combinations(range(resolution + m), m):
        edges = (-1, *bars, resolution + m)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(m + 1)])
    return torch.tensor(rows, dtype=torch.float64) / resolution


def dirichlet_samples(
    vertices: Tensor,
    n: int,
    *,
    alpha: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` barycentric weights ``(n, m + 1)`` drawn from Dirichlet(``alpha``).

    ``alpha = 1`` is the uniform distribution on the simplex of ``vertices`` (m + 1, D), as in
    paper A5 and Benton et al.'s simplex sampling; pass the result to :func:`evaluate_simplex`.
    Draws come from ``generator`` (default ``make_generator(0, "dirichlet")``) via a numpy
    generator seeded from it, so they are reproducible and device-independent. Returned in
    ``vertices``' dtype and device.
    """
    parts = vertices.shape[0]
    conc = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (parts,))
    if np.any(conc <= 0):
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    gen = generator if generator is not None else make_generator(0, "dirichlet")
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    weights = np.random.default_rng(seed).dirichlet(conc, size=n)
    return torch.as_tensor(weights).to(device=vertices.device, dtype=vertices.dtype)


def evaluate_simplex(
    model: nn.Module,
    data: Any,
    vertices: Tensor,
    weights: Tensor,
    *,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    wrt: Wrt = None,
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    strategy: Strategy = "auto",
    shortcut: bool = True,
    autocast: Autocast = None,
) -> SimplexSurface:
    """Loss and accuracy at the points ``weights @ vertices``.

    Args:
        vertices: ``(m + 1, D)``.
        weights: ``(P, m + 1)`` barycentric weights (e.g. :func:`simplex_weights` or
            :func:`dirichlet_samples`). A one-hot row gives exactly its vertex.
        other args: as for :func:`surface`.
    """
    verts = vertices.detach()
    if verts.dim() != 2 or verts.shape[0] < 2:
        raise ValueError(f"vertices must be (m + 1 >= 2, D), got {tuple(vertices.shape)}")
    w = weights.detach().to(verts)
    if w.dim() != 2 or w.shape[1] != verts.shape[0]:
        raise ValueError(f"weights must be (P, {verts.shape[0]}), got {tuple(weights.shape)}")
    setup = resolve_setup(model, data, split, verts, wrt=wrt, adapter=adapter, loss_fn=loss_fn)
    setup.space._check(verts)
    evaluator = make_evaluator(
        model,
        setup,
        loss_fn=loss_fn,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        strategy=strategy,
        shortcut=shortcut,
        autocast=autocast,
    )
    # No base: sum_i w_i v_i, so a vertex is reproduced bit for bit.
    loss, acc = evaluator.evaluate(None, verts, w)
    meta = {"split": split, "n_samples": evaluator.num_samples, **evaluator.info.as_meta()}
    return SimplexSurface(verts, w, loss, acc if evaluator.sample.scored else None, meta)


def simplex_grid(
    model: nn.Module,
    data: Any,
    vertices: Tensor,
    *,
    resolution: int = 10,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    wrt: Wrt = None,
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    strategy: Strategy = "auto",
    shortcut: bool = True,
    autocast: Autocast = None,
) -> SimplexSurface:
    """Loss and accuracy on the barycentric grid of resolution ``resolution`` over a simplex.

    Args:
        vertices: ``(m + 1, D)``, e.g. ``m + 1`` optima.
        resolution: grid points per edge minus one; ``C(resolution + m, m)`` points in all
            (see :func:`simplex_weights`), vertices included.
        other args: as for :func:`surface`.
    """
    weights = simplex_weights(vertices.shape[0] - 1, resolution)
    result = evaluate_simplex(
        model,
        data,
        vertices,
        weights,
        loss_fn=loss_fn,
        adapter=adapter,
        wrt=wrt,
        bn_data=bn_data,
        memory_budget_mb=memory_budget_mb,
        split=split,
        strategy=strategy,
        shortcut=shortcut,
        autocast=autocast,
    )
    result.meta["resolution"] = resolution
    return result
