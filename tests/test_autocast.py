"""Optional autocast for evaluation: off by default (numbers unchanged), bf16/fp16 on CPU within
a stated tolerance of float32, with the error against float32 reported."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossatlas import BatchAdapter, ParamSpace, surface, tunnel_width
from lossatlas.data.batches import Batch
from lossatlas.evaluate import autocast_error, evaluate_points
from tests.conftest import blobs

# Stated tolerances on the relative loss error against float32. bf16 keeps 8 bits of mantissa
# (relative rounding 2**-8 = 0.4% per op), fp16 11 bits; on these tiny models the loss moved by
# at most 0.08% (bf16) and 0.013% (fp16) when measured.
TOLERANCE = {"bf16": 0.02, "fp16": 0.005}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )


def test_autocast_none_changes_nothing() -> None:
    x, y = blobs(64)
    model = _model()
    plain = surface(model, (x, y), steps=5)
    off = surface(model, (x, y), steps=5, autocast=None)
    assert torch.equal(plain.loss, off.loss)
    assert not any(k.startswith("autocast") for k in off.meta)
    space = ParamSpace(model)
    thetas = space.flatten().unsqueeze(0)
    assert torch.equal(
        evaluate_points(space, thetas, x, y)[0],
        evaluate_points(space, thetas, x, y, autocast=None)[0],
    )


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("strategy", ["vmap", "loop"])
@pytest.mark.parametrize("shortcut", [True, False])
def test_surface_under_autocast_is_close_and_reports_its_error(
    dtype: Any, strategy: Any, shortcut: bool
) -> None:
    x, y = blobs(64)
    model = _model()
    exact = surface(model, (x, y), steps=5, strategy=strategy, shortcut=shortcut)
    approx = surface(model, (x, y), steps=5, strategy=strategy, shortcut=shortcut, autocast=dtype)
    assert approx.meta["shortcut"] == shortcut
    rel = ((approx.loss - exact.loss).abs() / exact.loss.abs()).max()
    assert 0 < rel < TOLERANCE[dtype]  # > 0: the lower precision really was used
    meta = approx.meta
    assert meta["autocast"] == dtype and meta["autocast_checked_points"] == 5
    assert 0 < meta["autocast_max_rel_error"] <= rel + 1e-12
    assert meta["autocast_max_abs_error"] <= (approx.loss - exact.loss).abs().max() + 1e-12
    assert approx.loss.dtype == torch.float32  # results come back in the points' dtype


def test_autocast_error_helper_and_adapter_losses() -> None:
    x, y = blobs(48)
    model = _model()
    space = ParamSpace(model)
    thetas = space.flatten().unsqueeze(0) + 0.1 * torch.randn(
        3, space.dim, generator=torch.Generator().manual_seed(1)
    )
    report = autocast_error(space, thetas, x, y, autocast="bf16")
    assert report["points"] == 3 and 0 < report["max_rel_error"] < TOLERANCE["bf16"]
    torch.testing.assert_close(report["loss_reference"], evaluate_points(space, thetas, x, y)[0])
    # A loss of the raw outputs (computed under autocast too) and a dict batch.
    adapter = BatchAdapter(loss=lambda out, batch: F.cross_entropy(out, batch["labels"]))
    batch = Batch.read({"input": x, "labels": y}, adapter)
    dict_report = autocast_error(space, thetas, batch, autocast="bf16")
    torch.testing.assert_close(dict_report["loss_reference"], report["loss_reference"])
    assert dict_report["max_rel_error"] < TOLERANCE["bf16"]


def test_width_under_autocast_reports_its_error() -> None:
    x, y = blobs(48)
    model = _model()
    exact = tunnel_width(model, (x, y), n_directions=3, max_distance=20.0)
    approx = tunnel_width(model, (x, y), n_directions=3, max_distance=20.0, autocast="bf16")
    assert exact.autocast_error is None
    error = approx.autocast_error
    assert error is not None and error["checked_points"] == 4
    assert 0 < error["max_rel_error"] < TOLERANCE["bf16"]
    assert abs(approx.base_loss - exact.base_loss) < TOLERANCE["bf16"] * exact.base_loss


def test_unknown_autocast_is_one_line() -> None:
    x, y = blobs(16)
    with pytest.raises(ValueError, match="autocast must be None, 'bf16' or 'fp16'") as info:
        surface(_model(), (x, y), steps=3, autocast="int8")  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
