"""Ensemble statistics on arrays: prediction ensembles, weight averages, angles, disagreement.

These are the measurements of PAPERS.md A7 (snapshot ensembles from a cyclic learning rate),
written for plain arrays so that they apply to any source of snapshots (cyclic-LR snapshots,
FGE, independent runs, points loaded from the store). Inputs may be numpy arrays or torch
tensors (CPU or not; they are copied to numpy); nothing here imports torch.

Shapes:

* ``probs``: ``(S, N, C)`` class probabilities of ``S`` ensemble members on ``N`` samples.
* ``preds``: ``(S, N)`` integer labels predicted by each member.
* ``weights``: ``(S, D)`` flat weight vectors of ``S`` points in weight space.
* ``y``: ``(N,)`` integer true labels.

Conventions fixed here so that numbers from different runs are comparable:

* The **prediction ensemble** averages the members' *probabilities* (softmax outputs), not
  their logits, and predicts the arg-max of the average (Huang et al. 2017, Garipov et al.
  2018). Ties go to the lowest class index (``argmax``).
* **Disagreement** is the fraction of samples on which two members predict different labels,
  whatever the true label (Fort, Hu & Lakshminarayanan 2019).
* **Angles** are between the weight vectors themselves, i.e. seen from the origin of weight
  space, unless an ``origin`` is given. That is how we read the paper's "angle between
  successive snapshots" (8° at the lowest LR_max rising to 60° at the highest): in its wedge
  model the low-loss wedges meet near the origin and fan out radially, so which wedge a point
  lies in is a matter of its direction from the origin, and a wide angle means a different
  wedge. Displacements from a common start point are the other possible reading; pass
  ``origin=θ_0`` (e.g. the shared start point) to measure those.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "accuracy_difference_se",
    "angle_matrix",
    "disagreement",
    "disagreement_matrix",
    "ensemble_accuracy",
    "ensemble_probs",
    "mean_offdiagonal",
    "predictions",
    "running_ensemble_accuracy",
    "softmax",
    "successive_angles",
    "successive_disagreement",
    "swa_average",
    "vector_angle",
]


def _np(a: Any, dtype: Any = None) -> np.ndarray:
    """``a`` as a numpy array; torch tensors are detached and copied to the CPU."""
    if hasattr(a, "detach"):  # a torch tensor, without importing torch here
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _check_probs(probs: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _np(probs, np.float64)
    labels = _np(y)
    if p.ndim != 3:
        raise ValueError(f"probs must have shape (S, N, C), got {p.shape}")
    if p.shape[0] == 0:
        raise ValueError("probs holds no ensemble members (S = 0)")
    if labels.shape != (p.shape[1],):
        raise ValueError(f"y must have shape ({p.shape[1]},), got {labels.shape}")
    return p, labels


# --------------------------------------------------------------------------- predictions


def softmax(logits: Any, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax of ``logits`` (any shape, e.g. ``(S, N, C)``), in float64."""
    z = _np(logits, np.float64)
    z = z - z.max(axis=axis, keepdims=True)  # exp of the shifted logits never overflows
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def predictions(probs: Any) -> np.ndarray:
    """Arg-max labels over the last axis: ``(S, N, C) -> (S, N)`` (or ``(N, C) -> (N,)``)."""
    return _np(probs).argmax(axis=-1)


def ensemble_probs(probs: Any) -> np.ndarray:
    """The prediction ensemble's probabilities: the mean over members, ``(S, N, C) -> (N, C)``."""
    p = _np(probs, np.float64)
    if p.ndim != 3 or p.shape[0] == 0:
        raise ValueError(f"probs must have shape (S >= 1, N, C), got {p.shape}")
    return p.mean(axis=0)


def ensemble_accuracy(probs: Any, y: Any) -> float:
    """Accuracy of the prediction ensemble that averages ``probs`` (S, N, C) over members.

    An ensemble of one member (or of identical members) has exactly that member's accuracy.
    """
    p, labels = _check_probs(probs, y)
    return float((p.mean(axis=0).argmax(axis=-1) == labels).mean())


def running_ensemble_accuracy(probs: Any, y: Any) -> np.ndarray:
    """Accuracy of the ensemble of the first ``s`` members, for ``s = 1 .. S``: ``(S,)``.

    Entry 0 is the accuracy of member 0 alone; entry ``S - 1`` equals
    :func:`ensemble_accuracy` of all members.
    """
    p, labels = _check_probs(probs, y)
    # The arg-max of a running mean is the arg-max of the running sum: no division needed.
    running = np.cumsum(p, axis=0)  # (S, N, C)
    return (running.argmax(axis=-1) == labels[None, :]).mean(axis=1)


def accuracy_difference_se(pred_a: Any, pred_b: Any, y: Any) -> float:
    """Standard error of ``acc(a) - acc(b)`` when both are measured on the same ``N`` samples.

    The paired difference ``d_i = [a_i = y_i] - [b_i = y_i]`` is non-zero only where exactly one
    of the two is right, so two near-identical predictors have a small error even on a small
    test set: ``se = std(d, ddof=1) / sqrt(N)`` (0 for ``N < 2``). Use it to tell a real accuracy
    difference from a few samples flipping.
    """
    a, b, labels = _np(pred_a), _np(pred_b), _np(y)
    if not (a.shape == b.shape == labels.shape) or a.ndim != 1:
        raise ValueError(f"expected three (N,) vectors, got {a.shape}, {b.shape}, {labels.shape}")
    if a.size < 2:
        return 0.0
    d = (a == labels).astype(np.float64) - (b == labels).astype(np.float64)
    return float(d.std(ddof=1) / np.sqrt(d.size))


# --------------------------------------------------------------------------- disagreement


def disagreement(pred_a: Any, pred_b: Any) -> float:
    """Fraction of samples on which two label vectors ``(N,)`` differ (0 when identical)."""
    a, b = _np(pred_a), _np(pred_b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"predictions must be two (N,) vectors, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("predictions are empty")
    return float((a != b).mean())


def disagreement_matrix(preds: Any) -> np.ndarray:
    """Pairwise disagreement of members' labels ``(S, N)``: symmetric ``(S, S)``, zero diagonal."""
    p = _np(preds)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"preds must have shape (S, N >= 1), got {p.shape}")
    return (p[:, None, :] != p[None, :, :]).mean(axis=-1)


def successive_disagreement(preds: Any) -> np.ndarray:
    """Disagreement between members ``s`` and ``s + 1`` of ``preds`` (S, N): ``(S - 1,)``."""
    p = _np(preds)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"preds must have shape (S, N >= 1), got {p.shape}")
    return (p[1:] != p[:-1]).mean(axis=-1)


def mean_offdiagonal(matrix: Any) -> float:
    """Mean of the off-diagonal entries of a square ``(S, S)`` matrix (NaN when ``S < 2``).

    For a :func:`disagreement_matrix` or :func:`angle_matrix` this is the mean over all pairs
    of distinct members, the order-free diversity of an ensemble.
    """
    m = _np(matrix, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square matrix, got {m.shape}")
    s = m.shape[0]
    if s < 2:
        return float("nan")
    return float(m[~np.eye(s, dtype=bool)].mean())


# --------------------------------------------------------------------------- weight space


def _unit_rows(w: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(w, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("the angle of a zero vector is undefined")
    return w / norms


def _angle_between_units(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Kahan's formula 2·atan2(|u - v|, |u + v|) stays accurate for angles near 0° and 180°,
    # where arccos of a dot product loses half the digits (a 1e-4 rad angle in float64).
    diff = np.linalg.norm(u - v, axis=-1)
    total = np.linalg.norm(u + v, axis=-1)
    return np.degrees(2.0 * np.arctan2(diff, total))


def vector_angle(a: Any, b: Any) -> float:
    """Angle in degrees between two vectors ``(D,)``, in ``[0, 180]``."""
    u, v = _np(a, np.float64), _np(b, np.float64)
    if u.shape != v.shape or u.ndim != 1:
        raise ValueError(f"expected two (D,) vectors, got {u.shape} and {v.shape}")
    return float(_angle_between_units(_unit_rows(u), _unit_rows(v)))


def _centered(weights: Any, origin: Any) -> np.ndarray:
    w = _np(weights, np.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must have shape (S, D), got {w.shape}")
    if origin is not None:
        o = _np(origin, np.float64)
        if o.shape != (w.shape[1],):
            raise ValueError(f"origin must have shape ({w.shape[1]},), got {o.shape}")
        w = w - o
    return w


def successive_angles(weights: Any, *, origin: Any = None) -> np.ndarray:
    """Angle in degrees between successive weight vectors ``θ_s`` and ``θ_{s+1}``: ``(S - 1,)``.

    Args:
        weights: ``(S, D)`` points in weight space, in trajectory order.
        origin: ``(D,)`` point the vectors are drawn from. ``None`` (default) measures the
            angle between the weight vectors themselves, as the paper does (see the module
            docstring); pass the start point to measure the angle between displacements.

    Raises:
        ValueError: when a vector (after subtracting ``origin``) is zero.
    """
    w = _centered(weights, origin)
    if w.shape[0] < 2:
        return np.zeros(0)
    u = _unit_rows(w)
    return _angle_between_units(u[:-1], u[1:])


def angle_matrix(weights: Any, *, origin: Any = None) -> np.ndarray:
    """Pairwise angles in degrees between the rows of ``weights`` (S, D): ``(S, S)``.

    ``origin`` as in :func:`successive_angles`. The diagonal is 0.
    """
    u = _unit_rows(_centered(weights, origin))
    out = _angle_between_units(u[:, None, :], u[None, :, :])
    np.fill_diagonal(out, 0.0)
    return out


def swa_average(weights: Any) -> Any:
    """Stochastic weight averaging: the mean of ``weights`` (S, D) over snapshots, ``(D,)``.

    Returns the same kind of array as given (a torch tensor stays a torch tensor, on its device
    and in its dtype), so the average can be evaluated directly; the mean is accumulated in
    float64 either way.
    """
    if hasattr(weights, "detach"):
        if weights.dim() != 2 or weights.shape[0] == 0:
            raise ValueError(f"weights must have shape (S >= 1, D), got {tuple(weights.shape)}")
        return weights.detach().double().mean(dim=0).to(weights.dtype)
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[0] == 0:
        raise ValueError(f"weights must have shape (S >= 1, D), got {w.shape}")
    return w.mean(axis=0, dtype=np.float64).astype(
        w.dtype if np.issubdtype(w.dtype, np.floating) else np.float64
    )
