"""Loss along rays ``origin + a * d`` or radial rays ``a * theta`` (paper A1(c), A2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lossatlas.data.batches import BatchAdapter
from lossatlas.evaluate import Autocast, LossFn, Strategy
from lossatlas.params import Wrt
from lossatlas.probes.subspace._setup import as_rows, make_evaluator, resolve_setup, to_numpy

__all__ = ["Rays", "rays"]


@dataclass(eq=False, repr=False)
class Rays:
    """Loss and accuracy along rays.

    Attributes:
        directions: ``(R, D)``; for radial rays, the points ``theta_r`` themselves.
        alphas: ``(A,)`` positions along every ray.
        loss, accuracy: ``(R, A)``; entry ``[r, a]`` is at ``origin + alphas[a] * directions[r]``
            (or ``alphas[a] * directions[r]`` when ``radial``).
        origin: ``(D,)``, or ``None`` for radial rays (which start at the origin of weight space).
        radial: whether the rays scale the points ``directions``.
        meta: settings and timings.
    """

    directions: Tensor
    alphas: Tensor
    loss: Tensor
    accuracy: Tensor | None
    origin: Tensor | None
    radial: bool
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        r, a = self.loss.shape
        return f"Rays(rays={r}, alphas={a}, radial={self.radial})"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``directions``, ``alphas``, ``loss``, ``accuracy`` (and ``origin``) as numpy arrays."""
        arrays = {
            "directions": to_numpy(self.directions),
            "alphas": to_numpy(self.alphas),
            "loss": to_numpy(self.loss),
        }
        if self.accuracy is not None:
            arrays["accuracy"] = to_numpy(self.accuracy)
        if self.origin is not None:
            arrays["origin"] = to_numpy(self.origin)
        return arrays


def rays(
    model: nn.Module,
    data: Any,
    *,
    directions: Tensor,
    alphas: Tensor | Sequence[float],
    origin: Tensor | None = None,
    radial: bool = False,
    loss_fn: LossFn | None = None,
    adapter: BatchAdapter | None = None,
    wrt: Wrt = None,
    bn_data: Any = None,
    memory_budget_mb: float = 512,
    split: str = "train",
    strategy: Strategy = "auto",
    shortcut: bool = True,
    autocast: Autocast = None,
) -> Rays:
    """Loss and accuracy along rays: ``origin + a * d_r`` or, radially, ``a * theta_r``.

    Args:
        directions: ``(R, D)`` ray directions, used as given (normalise them first if you want
            ``alphas`` to be distances); for ``radial=True`` the points ``theta_r`` to scale.
        alphas: ``(A,)`` positions along each ray.
        origin: ``(D,)`` common start of the rays; default the model's parameters. Must be
            ``None`` for radial rays, which start at the origin of weight space.
        radial: scale the points (PAPERS A2's radial structure: ``a = 1`` is the point itself,
            ``a = 0`` the origin).
        other args: as for :func:`surface`.

    Returns:
        :class:`Rays` with ``loss`` ``(R, A)``. Each ray is one subspace evaluation (the
        first-layer shortcut then needs two precomputed maps, not ``R + 1``).
    """
    if radial and origin is not None:
        raise ValueError("radial rays scale the points themselves; origin must be None")
    like = directions if radial else origin
    setup = resolve_setup(model, data, split, like, wrt=wrt, adapter=adapter, loss_fn=loss_fn)
    space = setup.space
    dirs = as_rows(directions, space.dim, "directions").to(device=setup.device, dtype=setup.dtype)
    start = None
    if not radial:
        start = space.flatten() if origin is None else origin.detach()
        start = start.to(device=setup.device, dtype=setup.dtype)
        space._check(start, batched=False)
    a = torch.as_tensor(alphas).detach().to(device=setup.device, dtype=setup.dtype).reshape(-1)
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
    losses, accs = [], []
    seconds = 0.0
    worst: dict[str, float] = {}  # autocast errors: the largest over the rays
    for r in range(dirs.shape[0]):
        loss, acc = evaluator.evaluate(start, dirs[r : r + 1], a.unsqueeze(1))
        losses.append(loss)
        accs.append(acc)
        seconds += evaluator.info.seconds
        for key in ("autocast_max_abs_error", "autocast_max_rel_error"):
            if key in evaluator.info.extra:
                worst[key] = max(worst.get(key, 0.0), evaluator.info.extra[key])
    meta = {"split": split, "n_samples": evaluator.num_samples, **evaluator.info.as_meta()}
    meta.update(worst)
    meta["seconds"] = seconds
    accuracy = torch.stack(accs) if evaluator.sample.scored else None
    return Rays(dirs, a, torch.stack(losses), accuracy, start, radial, meta)
