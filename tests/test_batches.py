"""A researcher's own model through the public API: any batch, output, loss, parameter choice.

Every number is checked against an independent plain-PyTorch computation: the loss at a
surface's centre against a plain forward pass, Hessian eigenvalues against ``eigvalsh`` of a
dense float64 Hessian built with ``torch.func.hessian`` on a hand-written loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lossatlas import (
    BatchAdapter,
    BatchError,
    HessianOperator,
    LossAtlasError,
    LossShapeError,
    OutputError,
    ParamSelectionError,
    ParamSpace,
    count_above,
    hessian_eigenpairs,
    hessian_eigenvalues,
    surface,
    tunnel_width,
)
from lossatlas.data.batches import Batch
from lossatlas.evaluate import evaluate_points
from tests.conftest import blobs


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def dense_reference(
    model: nn.Module, names: list[str], loss_of: Callable[[Callable[..., object]], Tensor]
) -> Tensor:
    """Dense Hessian of ``loss_of(forward)`` w.r.t. the named parameters by double backward
    (``torch.autograd.functional.hessian``; no ParamSpace, operator or batch adapter involved).
    ``forward(*args)`` runs the plain module with those parameters swapped in."""
    own = dict(model.named_parameters())
    flat = torch.cat([own[n].detach().reshape(-1) for n in names])
    sizes = [own[n].numel() for n in names]

    def g(theta: Tensor) -> Tensor:
        parts = theta.split(sizes)
        override = {n: p.view_as(own[n]) for n, p in zip(names, parts, strict=True)}
        return loss_of(lambda *args: torch.func.functional_call(model, override, args))

    with warnings.catch_warnings():  # torch builds its jvp decompositions with jit.script
        warnings.filterwarnings("ignore", ".*torch.jit.script.*", DeprecationWarning)
        return torch.autograd.functional.hessian(g, flat)


# ------------------------------------------------------------------------------ models


class DictOut(nn.Module):
    """Returns {"logits": ...} like a HuggingFace model with return_dict=True."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, input: Tensor) -> dict[str, Tensor]:
        return {"logits": self.body(input), "hidden": input}


class AttrOut:
    def __init__(self, logits: Tensor) -> None:
        self.logits = logits


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 4)
        self.b = nn.Linear(2, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor, z: Tensor) -> AttrOut:
        return AttrOut(self.head(torch.tanh(self.a(x) + self.b(z))))


def regression_data(n: int = 48) -> tuple[Tensor, Tensor]:
    g = _gen(4)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :1]) + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return x, y


def regression_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1)).double()


class DictDataset(Dataset):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input": self.x[i], "labels": self.y[i]}


# ------------------------------------------------------------------------------ regression


def test_regression_mlp_surface_centre_and_eigenvalues() -> None:
    model = regression_mlp()
    x, y = regression_data()
    surf = surface(model, (x, y), loss_fn=F.mse_loss, steps=3, span=0.5)
    with torch.no_grad():
        plain = F.mse_loss(model(x), y)
    torch.testing.assert_close(surf.loss[1, 1], plain, rtol=1e-12, atol=1e-14)
    assert surf.accuracy is None and "accuracy" not in surf.to_arrays()

    names = [n for n, _ in model.named_parameters()]
    ref = torch.linalg.eigvalsh(dense_reference(model, names, lambda fwd: F.mse_loss(fwd(x), y)))
    top = hessian_eigenvalues(model, (x, y), k=3, loss_fn=F.mse_loss, tol=1e-10)
    torch.testing.assert_close(top, ref.flip(0)[:3], rtol=1e-8, atol=1e-10)
    width = tunnel_width(model, (x, y), loss_fn=F.mse_loss, n_directions=3, max_distance=5.0)
    assert width.base_loss == pytest.approx(float(plain), rel=1e-12)


# ------------------------------------------------------------------------------ dict batches


def test_dict_batches_and_dict_outputs_need_no_adapter() -> None:
    model = DictOut().double()
    x, y = blobs(40, dtype=torch.float64)
    loader = DataLoader(DictDataset(x, y), batch_size=16)
    surf = surface(model, loader, steps=3, span=0.3)
    with torch.no_grad():
        logits = model(x)["logits"]
    torch.testing.assert_close(surf.loss[1, 1], F.cross_entropy(logits, y), rtol=1e-12, atol=0)
    acc = (logits.argmax(1) == y).double().mean()
    assert surf.accuracy is not None
    torch.testing.assert_close(surf.accuracy[1, 1], acc)

    names = [n for n, _ in model.named_parameters()]
    dense = dense_reference(model, names, lambda fwd: F.cross_entropy(fwd(x)["logits"], y))
    op = HessianOperator(model, loader)
    assert op.streamed
    v = torch.randn(op.dim, generator=_gen(1), dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), dense @ v, rtol=1e-10, atol=1e-12)
    values = hessian_eigenvalues(model, loader, k=2, tol=1e-10)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(dense).flip(0)[:2], rtol=1e-8, atol=0)


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_several_inputs_attribute_outputs_and_custom_loss(strategy: str) -> None:
    model = TwoInputs().double()
    g = _gen(2)
    x, y = blobs(30, dtype=torch.float64)
    z = torch.randn(30, 2, generator=g, dtype=torch.float64)
    weights = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)

    def loss(outputs: AttrOut, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(outputs.logits, batch[2], weight=weights, reduction="sum") / len(
            batch[2]
        )

    adapter = BatchAdapter(inputs=lambda b: (b[0], b[1]), target=lambda b: b[2], loss=loss)
    batches = [(x[s : s + 8], z[s : s + 8], y[s : s + 8]) for s in range(0, 30, 8)]
    space = ParamSpace(model)
    centre = space.flatten()
    thetas = centre.unsqueeze(0) + 0.1 * torch.randn(3, space.dim, generator=g).double()

    got, acc = evaluate_points(
        space, thetas, Batch.read((x, z, y), adapter), strategy=strategy, sample_chunk=7
    )
    for i in range(3):
        space.load(thetas[i])
        with torch.no_grad():
            out = model(x, z)
        ref = F.cross_entropy(out.logits, y, weight=weights, reduction="sum") / 30
        torch.testing.assert_close(got[i], ref, rtol=1e-12, atol=0)
        torch.testing.assert_close(acc[i], (out.logits.argmax(1) == y).double().mean())
    space.load(centre)
    surf = surface(model, batches, adapter=adapter, steps=1, span=0.0)
    model_loss = loss(model(x, z), (x, z, y))
    torch.testing.assert_close(surf.loss.reshape(()), model_loss.detach(), rtol=1e-12, atol=0)


def test_user_metric_and_no_accuracy() -> None:
    model = regression_mlp()
    x, y = regression_data()

    def r2(pred: Tensor, target: Tensor) -> Tensor:
        return 1 - ((pred - target) ** 2).sum() / ((target - target.mean()) ** 2).sum()

    surf = surface(
        model, (x, y), adapter=BatchAdapter(loss_fn=F.mse_loss, accuracy=r2), steps=1, span=0.0
    )
    with torch.no_grad():
        ref = r2(model(x), y)
    assert surf.accuracy is not None
    torch.testing.assert_close(surf.accuracy.reshape(()), ref, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------ which parameters


def frozen_backbone() -> nn.Module:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(5, 30), nn.Tanh(), nn.Linear(30, 30), nn.Tanh(), nn.Linear(30, 3)
    )
    for p in model[:4].parameters():
        p.requires_grad_(False)
    return model.double()


def test_frozen_backbone_spans_only_trainable_parameters() -> None:
    model = frozen_backbone()
    x, y = blobs(40, dtype=torch.float64)
    op = HessianOperator(model, (x, y))
    assert op.dim == 93 == sum(p.numel() for p in model.parameters() if p.requires_grad)
    names = ["4.weight", "4.bias"]
    dense = dense_reference(model, names, lambda fwd: F.cross_entropy(fwd(x), y))
    torch.testing.assert_close(op.dense(), dense, rtol=1e-10, atol=1e-12)
    values = hessian_eigenvalues(model, (x, y), k=3, tol=1e-10)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(dense).flip(0)[:3], rtol=1e-8, atol=0)
    surf = surface(model, (x, y), steps=3, span=0.5)
    assert surf.center.shape == (93,)
    with torch.no_grad():
        torch.testing.assert_close(
            surf.loss[1, 1], F.cross_entropy(model(x), y), rtol=1e-12, atol=0
        )


@pytest.mark.parametrize("vectorise", ["vmap", "loop"])
def test_frozen_batchnorm_backbone_with_recomputed_statistics(vectorise: str) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    model[:3].requires_grad_(False)
    x, y = blobs(40, dtype=torch.float64)
    surf = surface(model, (x, y), steps=1, span=0.0, bn_data=x, strategy=vectorise)
    # Plain reference: BatchNorm statistics of x at the (unchanged) point, then eval.
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        ref = F.cross_entropy(model(x), y)
    torch.testing.assert_close(surf.loss.reshape(()), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "wrt",
    ["2", ["2.weight", "2.bias"], "module", lambda name, p: name.startswith("2."), "tensors"],
)
def test_per_layer_hessian_is_the_block_of_the_full_one(wrt: object) -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    if wrt == "module":
        wrt = model[2]
    elif wrt == "tensors":
        wrt = [model[2].weight, model[2].bias]
    x, y = blobs(30, dtype=torch.float64)
    full = HessianOperator(model, (x, y), wrt="all").dense()
    layer = HessianOperator(model, (x, y), wrt=wrt)
    assert layer.dim == 21
    start = 36  # 0.weight (30) + 0.bias (6)
    torch.testing.assert_close(layer.dense(), full[start:, start:], rtol=1e-10, atol=1e-12)


def test_params_list_is_refused_with_a_pointer_to_wrt() -> None:
    model = nn.Sequential(nn.Linear(5, 3))
    x, y = blobs(10)
    with pytest.raises(ParamSelectionError, match="wrt="):
        hessian_eigenvalues(model, (x, y), k=1, params=list(model.parameters()))
    with pytest.raises(ParamSelectionError, match="no parameter or module"):
        ParamSpace(model, wrt="nope")
    model.requires_grad_(False)
    with pytest.raises(ParamSelectionError, match="wrt='all'"):
        ParamSpace(model)
    assert ParamSpace(model, wrt="all").dim == 18


# ------------------------------------------------------------------------------ both ends


@pytest.mark.parametrize("which", ["SA", "LM", "BE"])
def test_either_end_of_the_spectrum_matches_dense(which: str) -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = blobs(30, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    ref = torch.linalg.eigvalsh(
        dense_reference(model, names, lambda fwd: F.cross_entropy(fwd(x), y))
    )
    assert ref[0] < -1e-3  # an untrained net has negative curvature
    k = 4
    values, vectors = hessian_eigenpairs(model, (x, y), k=k, which=which, tol=1e-11, ncv=40)
    if which == "SA":
        expected = ref[:k]
    elif which == "LM":
        expected = ref[ref.abs().argsort(descending=True)[:k]]
    else:
        expected = torch.cat([ref[: k // 2], ref[-(k - k // 2) :]]).sort(descending=True).values
    torch.testing.assert_close(values, expected, rtol=1e-7, atol=1e-9)
    op = HessianOperator(model, (x, y))
    for value, vector in zip(values, vectors, strict=True):
        torch.testing.assert_close(op.matvec(vector), value * vector, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------ streaming


class Stream(IterableDataset):
    """Seeded batches made on the fly: never all in memory at once."""

    def __init__(self, x: Tensor, y: Tensor, batch: int) -> None:
        self.x, self.y, self.batch = x, y, batch

    def __iter__(self):  # type: ignore[no-untyped-def]
        for s in range(0, self.x.shape[0], self.batch):
            yield self.x[s : s + self.batch].clone(), self.y[s : s + self.batch].clone()


def test_streamed_data_larger_than_the_budget_gives_the_in_memory_numbers() -> None:
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x, y = blobs(3000, dtype=torch.float64)  # 3000 x 5 x 8 B = 120 kB of inputs
    stream = DataLoader(Stream(x, y, 100), batch_size=None)
    budget = 0.05  # MiB: smaller than the data set
    assert x.numel() * x.element_size() > budget * 2**20
    mem = surface(model, (x, y), steps=3, span=0.5, memory_budget_mb=budget)
    streamed = surface(model, stream, steps=3, span=0.5, memory_budget_mb=budget)
    torch.testing.assert_close(streamed.loss, mem.loss, rtol=1e-12, atol=1e-14)
    assert mem.accuracy is not None and streamed.accuracy is not None
    torch.testing.assert_close(streamed.accuracy, mem.accuracy)
    assert streamed.meta["n_samples"] == 3000 and streamed.meta["sample_blocks"] >= 30

    v = torch.randn(ParamSpace(model).dim, generator=_gen(9), dtype=torch.float64)
    op_mem, op_stream = (
        HessianOperator(model, (x, y)),
        HessianOperator(model, stream, batch_size=64),
    )
    torch.testing.assert_close(op_stream.matvec(v), op_mem.matvec(v), rtol=1e-10, atol=1e-13)
    assert op_stream.num_samples == 3000
    counts_mem = count_above(model, (x, y), thresholds=[0.01, 0.1])
    assert count_above(model, stream, thresholds=[0.01, 0.1]) == counts_mem
    w_mem = tunnel_width(model, (x, y), n_directions=2, max_distance=10.0)
    w_stream = tunnel_width(model, stream, n_directions=2, max_distance=10.0)
    torch.testing.assert_close(w_stream.distances, w_mem.distances, rtol=1e-9, atol=0)


def test_a_generator_is_refused() -> None:
    model = nn.Sequential(nn.Linear(5, 3))
    x, y = blobs(10)
    with pytest.raises(BatchError, match="one-shot iterator"):
        surface(model, ((x, y) for _ in range(2)), steps=1)


# ------------------------------------------------------------------------------ bad input


def test_bad_batches_outputs_and_losses_say_what_was_expected() -> None:
    model = nn.Sequential(nn.Linear(5, 3))
    x, y = blobs(12)
    with pytest.raises(BatchError, match=r"3 items.*expected \(x, y\)"):
        surface(model, [(x, x, y)], steps=1)
    with pytest.raises(BatchError, match="'labels' key"):
        surface(DictOut(), [{"input": x, "target": y}], steps=1)

    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(5, 3)

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return self.lin(x), x

    with pytest.raises(OutputError, match="expected a tensor of logits"):
        surface(TupleOut(), (x, y), steps=1)
    surf = surface(TupleOut(), (x, y), adapter=BatchAdapter(logits=lambda out: out[0]), steps=1)
    assert surf.loss.shape == (1, 1)
    with pytest.raises(LossShapeError, match="expected a scalar"):
        hessian_eigenvalues(
            model, (x, y), k=1, loss_fn=lambda lg, t: F.cross_entropy(lg, t, reduction="none")
        )
    with pytest.raises(LossShapeError, match=r"target of shape \(12, 1\)"):
        surface(model, (x, y.unsqueeze(1)), steps=1)
    with pytest.raises(OutputError, match="do not fit class labels"):
        surface(model, (x, y.unsqueeze(1)), loss_fn=lambda lg, t: lg.mean() * 0, steps=1)
    for err in (BatchError, OutputError, LossShapeError, ParamSelectionError):
        assert issubclass(err, LossAtlasError)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: surface(m, [(x, x, y)], steps=1),
        lambda m, x, y: surface(m, (x, y.unsqueeze(1)), steps=1),
        lambda m, x, y: hessian_eigenvalues(m, (x, y), k=1, params=list(m.parameters())),
        lambda m, x, y: surface(m, (x, y), loss_fn=lambda lg, t: lg, steps=1),
    ],
)
def test_bad_input_is_one_line(call: Callable[..., object]) -> None:
    model = nn.Sequential(nn.Linear(5, 3))
    x, y = blobs(12)
    with pytest.raises(LossAtlasError) as info:
        call(model, x, y)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
