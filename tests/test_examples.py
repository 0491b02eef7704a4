"""The scripts in examples/ run at tiny sizes, and their numbers match plain PyTorch."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lossatlas import HessianOperator
from tests._formats import write_cifar_folder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def centre(out: dict[str, Any]) -> Tensor:
    loss = out["surface"].loss
    return loss[tuple(s // 2 for s in loss.shape)]


def plain_mean(model: nn.Module, batches: Any, loss_of: Any) -> Tensor:
    """The mean loss over a loader by a plain forward pass per batch (independent of lossatlas)."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for batch in batches:
            value, n = loss_of(model, batch)
            total += value.double() * n
            count += n
    return total / count


def double_backward_hvp(model: nn.Module, loss: Tensor, v: Tensor) -> Tensor:
    """``H v`` by double backward through the plain module, w.r.t. its trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    hv = torch.autograd.grad(flat @ v, params)
    return torch.cat([h.reshape(-1) for h in hv])


def dense_eigenvalues(model: nn.Module, loss_of: Any) -> Tensor:
    """All eigenvalues of the Hessian w.r.t. the trainable parameters, by double backward."""
    params = [p for p in model.parameters() if p.requires_grad]
    dim = sum(p.numel() for p in params)
    rows = [double_backward_hvp(model, loss_of(), e) for e in torch.eye(dim)]
    hessian = torch.stack(rows).double()
    return torch.linalg.eigvalsh(0.5 * (hessian + hessian.T))


def test_regression_mlp() -> None:
    out = load("regression_mlp").main(
        [
            "--samples",
            "64",
            "--hidden",
            "6",
            "--train-steps",
            "20",
            "--steps",
            "3",
            "--k",
            "2",
            "--directions",
            "2",
        ]
    )
    model, (x, y) = out["model"], out["data"]
    with torch.no_grad():
        plain = F.mse_loss(model(x), y)
    torch.testing.assert_close(centre(out), plain, rtol=1e-6, atol=1e-7)
    assert out["surface"].accuracy is None
    ref = dense_eigenvalues(model, lambda: F.mse_loss(model(x), y))
    torch.testing.assert_close(out["top"].double(), ref.flip(0)[:2], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(out["bottom"].double(), ref[:2], rtol=1e-3, atol=1e-5)
    assert out["width"].base_loss == pytest.approx(float(plain), rel=1e-6)


def test_frozen_backbone() -> None:
    out = load("frozen_backbone").main(
        ["--samples", "50", "--train-steps", "5", "--steps", "3", "--k", "2", "--directions", "2"]
    )
    model, (x, y) = out["model"], out["data"]
    assert out["surface"].center.numel() == 32 * 5 + 5
    with torch.no_grad():
        plain = F.cross_entropy(model(x), y)
    torch.testing.assert_close(centre(out), plain, rtol=1e-6, atol=1e-7)
    ref = dense_eigenvalues(model, lambda: F.cross_entropy(model(x), y))
    torch.testing.assert_close(out["top"].double(), ref.flip(0)[:2], rtol=1e-3, atol=1e-5)


def test_cnn_cifar10(tmp_path: Path) -> None:
    write_cifar_folder(tmp_path, "bin", per_batch=4)
    out = load("cnn_cifar10").main(
        [
            "--root",
            str(tmp_path / "cifar-10-batches-bin"),
            "--width",
            "4",
            "--batch",
            "3",
            "--train-steps",
            "3",
            "--steps",
            "3",
            "--k",
            "2",
            "--directions",
            "2",
        ]
    )
    model, data = out["model"], out["data"]
    assert out["surface"].meta["n_samples"] == 20
    plain = plain_mean(model, data, lambda m, b: (F.cross_entropy(m(b[0]), b[1]), len(b[1])))
    torch.testing.assert_close(centre(out).double(), plain, rtol=1e-5, atol=1e-6)
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    v = torch.randn(
        sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0)
    )
    ref = double_backward_hvp(model, F.cross_entropy(model(x), y), v)
    torch.testing.assert_close(HessianOperator(model, data).matvec(v), ref, rtol=1e-3, atol=1e-5)


def test_hf_bert() -> None:
    pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own deprecation notices
        out = load("hf_bert").main(
            [
                "--samples",
                "24",
                "--length",
                "6",
                "--hidden",
                "8",
                "--steps",
                "3",
                "--k",
                "1",
                "--directions",
                "2",
            ]
        )
    model, data = out["model"], out["data"]

    def loss_of(m: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return F.cross_entropy(m(**inputs).logits, batch["labels"]), len(batch["labels"])

    torch.testing.assert_close(
        centre(out).double(), plain_mean(model, data, loss_of), rtol=1e-5, atol=1e-6
    )
    assert out["head"].center.numel() == 8 * 2 + 2
    batches = list(data)
    full = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    loss, _ = loss_of(model, full)
    dim = sum(p.numel() for p in model.parameters())
    v = torch.randn(dim, generator=torch.Generator().manual_seed(0))
    ref = double_backward_hvp(model, loss, v)
    torch.testing.assert_close(HessianOperator(model, data).matvec(v), ref, rtol=1e-3, atol=1e-5)


def test_readme_own_model_section_runs() -> None:
    text = (EXAMPLES.parent / "README.md").read_text()
    block = text.split("### Your own model, your own batches")[1].split("```python")[1]
    namespace: dict[str, Any] = {}
    exec(block.split("```")[0], namespace)
    assert namespace["plane"].accuracy is None  # the regression surface
    assert (namespace["low"][:-1] <= namespace["low"][1:]).all()  # ascending from the bottom
