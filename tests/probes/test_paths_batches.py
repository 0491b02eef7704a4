"""Tunnels and m-connectors through the batch interface (lossatlas.data.batches).

Dict batches, ``DataLoader``s, keyword-argument models, custom adapters and regression losses
fit paths; each is checked against the same path on ``(X, y)`` tensors (bit for bit where the
reading is the same), or against a plain PyTorch forward pass at the optima.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lossatlas import BatchAdapter, BatchError, LossAtlasError, ParamSpace
from lossatlas.probes.paths import Connector, ConnectorOptions, Tunnel, _fit, m_connector, tunnel
from lossatlas.seeding import make_generator
from tests._user_models import DictRows, TinyText, text_data
from tests.conftest import blobs

OPTS = ConnectorOptions(
    points=2, epochs=2, batch_size=16, path_resolution=2, dirichlet_samples=6, joint=True
)


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def optima_of(model: nn.Module, count: int) -> Tensor:
    dim = ParamSpace(model).dim
    return torch.randn(count, dim, generator=make_generator(2, "optima"), dtype=torch.float64)


def arrays_of(*paths: Tunnel | Connector) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, path in enumerate(paths):
        out.update({f"{i}_{name}": v for name, v in path.to_arrays().items()})
    return out


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name, values in want.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


def fit_all(model: nn.Module, data: object, optima: Tensor, **kw: object) -> dict[str, np.ndarray]:
    """A jointly optimised tunnel, a projected and a Benton connector, as arrays."""
    tn = tunnel(model, data, optima[0], optima[1], options=OPTS, **kw)  # type: ignore[arg-type]
    projected = m_connector(model, data, optima, options=OPTS, **kw)  # type: ignore[arg-type]
    benton = m_connector(
        model,
        data,
        optima,
        options=OPTS.model_copy(update={"method": "benton"}),
        **kw,  # type: ignore[arg-type]
    )
    return arrays_of(tn, projected, benton)


def test_dict_batches_and_loaders_give_the_tensors_numbers_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = blobs(40, dtype=torch.float64)
    model = small_model()  # nn.Sequential: forward(input), so {"input": x} calls it
    optima = optima_of(model, 3)
    on_tensors = fit_all(model, (x, y), optima)  # tensors: the stacked population engine
    pairs = DataLoader(TensorDataset(x, y), batch_size=15)
    assert_same_arrays(fit_all(model, pairs, optima), on_tensors)
    # Dict batches take the vmap engine: the tensors on that engine give the same numbers...
    dicts = fit_all(model, DataLoader(DictRows(input=x, labels=y), batch_size=15), optima)
    with monkeypatch.context() as patch:
        patch.setattr(_fit, "fit_members", functools.partial(_fit.fit_members, engine="vmap"))
        assert_same_arrays(dicts, fit_all(model, (x, y), optima))
    # ... and the two engines agree up to rounding.
    for name, values in on_tensors.items():
        np.testing.assert_allclose(dicts[name], values, rtol=1e-9, atol=1e-12, err_msg=name)


def test_an_adapter_for_several_inputs_gives_the_plain_models_numbers() -> None:
    x, y = blobs(40, dtype=torch.float64)

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 3)

        def forward(self, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
            return self.a(u) + self.b(v), u

    adapter = BatchAdapter(
        inputs=lambda b: (b[0], b[1]), target=lambda b: b[2], logits=lambda out: out[0]
    )
    model = TwoInputs().double()
    optima = optima_of(model, 3)
    got = fit_all(model, [(x, x.flip(1), y)], optima, adapter=adapter)
    # The same model on (X, y), its second input built inside the forward.
    plain = nn.Module()
    plain.a, plain.b = model.a, model.b
    plain.forward = lambda u: model.a(u) + model.b(u.flip(1))  # type: ignore[method-assign]
    want = fit_all(plain, (x, y), optima)
    assert got.keys() == want.keys()
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-10, atol=1e-12, err_msg=name)


def test_keyword_model_with_dict_outputs_fits_paths_with_plain_losses_at_the_optima() -> None:
    data = text_data()
    model = TinyText().double()
    optima = optima_of(model, 3) * 0.3
    loader = DataLoader(DictRows(**data), batch_size=16)
    tn = tunnel(model, loader, optima[0], optima[1], options=OPTS)
    connector = m_connector(model, loader, optima, options=OPTS)
    assert torch.isfinite(tn.loss_tunnel["train"]).all() and torch.isfinite(tn.points).all()
    assert torch.isfinite(tn.acc_tunnel["train"]).all()
    assert 0.0 <= float(tn.disagreement_a_tunnel.max()) <= 1.0
    # The line's ends and the connector's optima are the optima: a plain forward pass there.
    space = ParamSpace(model)
    for i, theta in enumerate(optima):
        space.load(theta)
        with torch.no_grad():
            out = model(input_ids=data["input_ids"], attention_mask=data["attention_mask"])
        plain = float(F.cross_entropy(out["logits"], data["labels"]))
        assert float(connector.loss_optima["train"][i]) == pytest.approx(plain, rel=1e-12)
        if i < 2:
            end = tn.loss_line["train"][0 if i == 0 else -1]
            assert float(end) == pytest.approx(plain, rel=1e-12)


def test_regression_paths_have_mse_losses_and_no_accuracy_or_label_disagreement() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = x @ torch.randn(4, 1, generator=g, dtype=torch.float64) + 0.1  # float targets (N, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    optima = optima_of(model, 3) * 0.5
    tn = tunnel(model, (x, y), optima[0], optima[1], options=OPTS, loss_fn=F.mse_loss)
    connector = m_connector(model, (x, y), optima, options=OPTS, loss_fn=F.mse_loss)
    # Training lowers the split points' loss below the straight line's there.
    assert (tn.history["train_loss"][:, -1] < tn.history["train_loss"][:, 0]).all()
    assert (
        torch.isnan(tn.acc_tunnel["train"]).all()
        and torch.isnan(connector.acc_samples["train"]).all()
    )
    assert torch.isnan(tn.disagreement_a_line).all() and torch.isnan(tn.disagreement_b_tunnel).all()
    assert math.isnan(tn.disagreement_endpoints)
    space = ParamSpace(model)
    space.load(optima[0])
    with torch.no_grad():
        plain = float(F.mse_loss(model(x), y))
    assert float(tn.loss_line["train"][0]) == pytest.approx(plain, rel=1e-12)


def test_batches_the_paths_cannot_read_give_one_clear_line() -> None:
    x, y = blobs(16, dtype=torch.float64)
    model = small_model()
    optima = optima_of(model, 2)
    with pytest.raises(BatchError) as info:
        tunnel(model, [(x, x, y)], optima[0], optima[1], options=OPTS)
    assert isinstance(info.value, LossAtlasError)
    assert "\n" not in str(info.value) and "expected (x, y)" in str(info.value)
    with pytest.raises(BatchError, match="'labels' key"):
        m_connector(model, [{"input": x, "target": y}], optima, options=OPTS)
