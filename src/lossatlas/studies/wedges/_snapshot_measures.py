"""What the ensemble experiment measures on a set of points: accuracies of every snapshot, of
the prediction ensemble and of SWA, and the angles and label disagreement between snapshots."""

from __future__ import annotations

import numpy as np
import torch

from lossatlas.analysis import ensembles as ens
from lossatlas.batchnorm import norm_modules, recompute_bn
from lossatlas.evaluate import predict_points
from lossatlas.params import ParamSpace

__all__ = ["measure_snapshots", "nan_measurements"]


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return (logits.argmax(dim=-1) == y).double().mean(dim=-1).cpu().numpy()


def measure_snapshots(
    space: ParamSpace,
    points: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    bn_x: torch.Tensor | None = None,
    bn_batch_size: int | None = None,
    origin: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Ensemble measurements of one set of ``S`` points ``(S, D)`` on the split ``(x, y)``.

    The points are snapshots of one trajectory (in order) or members of an ensemble. When the
    model has BatchNorm layers and ``bn_x`` is given, statistics are recomputed on ``bn_x`` at
    every point and at the SWA average (see :func:`recompute_bn`); otherwise the module's
    buffers are used.

    Returns (numpy; ``S`` snapshots):
        ``snapshot_acc`` (S,), ``single_acc_last``, ``single_acc_mean``, ``ensemble_acc``,
        ``running_ensemble_acc`` (S,), ``swa_acc``, ``swa_minus_ensemble``,
        ``ensemble_minus_single_se`` (standard error of ensemble - last snapshot accuracy,
        paired over the samples),
        ``successive_angle`` (S-1,) degrees between the weight vectors,
        ``successive_angle_from_origin`` (S-1,) between displacements from ``origin`` (NaN
        without one), ``successive_disagreement`` (S-1,), ``angle_mean`` and
        ``disagreement_mean`` (their means), ``angle_matrix`` and ``disagreement_matrix``
        (S, S), ``pairwise_angle`` and ``pairwise_disagreement`` (means over all pairs).
        Scalars are 0-d arrays. A set with a non-finite point (a diverged member) gives NaN
        everywhere.
    """
    s = points.shape[0]
    if not bool(torch.isfinite(points).all()):
        return nan_measurements(s)
    with_bn = bn_x is not None and bool(norm_modules(space.model))
    swa = ens.swa_average(points).reshape(1, -1)
    both = torch.cat([points, swa])
    buffers = (
        recompute_bn(space, both, bn_x, batch_size=bn_batch_size)
        if with_bn and bn_x is not None  # with_bn implies bn_x; the check narrows its type
        else None
    )
    logits = predict_points(space, both, x, buffers=buffers, buffers_batched=with_bn)
    accs = _accuracy(logits, y)
    probs = ens.softmax(logits[:s].cpu().numpy())
    labels = y.cpu().numpy()
    preds = ens.predictions(probs)
    weights = points.double().cpu().numpy()
    angles_from = (
        ens.successive_angles(weights, origin=origin.double().cpu().numpy())
        if origin is not None
        else np.full(s - 1, np.nan)
    )
    angles = ens.successive_angles(weights)
    dis = ens.successive_disagreement(preds)
    angle_mat = ens.angle_matrix(weights)
    dis_mat = ens.disagreement_matrix(preds)
    ensemble = ens.ensemble_accuracy(probs, labels)
    ensemble_preds = ens.predictions(ens.ensemble_probs(probs))
    out = {
        "snapshot_acc": accs[:s],
        "single_acc_last": accs[s - 1],
        "single_acc_mean": accs[:s].mean(),
        "ensemble_acc": ensemble,
        "running_ensemble_acc": ens.running_ensemble_accuracy(probs, labels),
        "swa_acc": accs[s],
        "swa_minus_ensemble": accs[s] - ensemble,
        "ensemble_minus_single_se": ens.accuracy_difference_se(ensemble_preds, preds[-1], labels),
        "successive_angle": angles,
        "successive_angle_from_origin": angles_from,
        "successive_disagreement": dis,
        "angle_mean": angles.mean() if s > 1 else np.nan,
        "disagreement_mean": dis.mean() if s > 1 else np.nan,
        "angle_matrix": angle_mat,
        "disagreement_matrix": dis_mat,
        "pairwise_angle": ens.mean_offdiagonal(angle_mat),
        "pairwise_disagreement": ens.mean_offdiagonal(dis_mat),
    }
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def nan_measurements(s: int) -> dict[str, np.ndarray]:
    shapes = {
        "snapshot_acc": (s,),
        "running_ensemble_acc": (s,),
        "successive_angle": (s - 1,),
        "successive_angle_from_origin": (s - 1,),
        "successive_disagreement": (s - 1,),
        "angle_matrix": (s, s),
        "disagreement_matrix": (s, s),
    }
    scalars = (
        "single_acc_last",
        "single_acc_mean",
        "ensemble_acc",
        "swa_acc",
        "swa_minus_ensemble",
        "ensemble_minus_single_se",
        "angle_mean",
        "disagreement_mean",
        "pairwise_angle",
        "pairwise_disagreement",
    )
    return {
        **{k: np.full(shape, np.nan) for k, shape in shapes.items()},
        **{k: np.asarray(np.nan) for k in scalars},
    }
