"""dense_hessian's autodiff columns on several Python threads (one torch thread each): the same
Hessian as one thread, bit for bit, and the exact one against autograd in float64. (The chain
engine's threads: tests/probes/test_curvature_chain.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from lossatlas.config import ModelConfig
from lossatlas.models import build_model
from lossatlas.probes.curvature import dense, dense_hessian
from tests.probes.test_curvature_head import autograd_hessian


@pytest.fixture
def threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = build_model(ModelConfig(name="cnn1d", width=3), (24,), 4, seed=0).double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 24, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=generator)
    return model, x, y


def test_threaded_columns_equal_one_thread_and_autograd(
    threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, y = _problem()
    calls: list[int] = []
    real = dense.on_threads

    def counted(*args: object) -> None:
        calls.append(1)
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(dense, "on_threads", counted)
    torch.set_num_threads(1)
    single = dense_hessian(model, (x, y), batch_size=16, block_size=1, engine="autodiff")
    assert calls == []  # one thread: no pool
    torch.set_num_threads(2)
    pooled = dense_hessian(model, (x, y), batch_size=16, block_size=1, engine="autodiff")
    assert len(calls) == 3  # one pool per sample chunk (40 samples in chunks of 16)
    assert torch.get_num_threads() == 2  # restored after the pool
    torch.testing.assert_close(pooled, single, rtol=0, atol=0)
    torch.testing.assert_close(pooled, autograd_hessian(model, x, y), rtol=1e-10, atol=1e-12)


def test_vmapped_blocks_take_no_threads(threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of several columns are vmapped: one call each, nothing to spread over threads.
    model, x, y = _problem()
    monkeypatch.setattr(dense, "on_threads", lambda *args: pytest.fail("threads used"))
    torch.set_num_threads(2)
    blocked = dense_hessian(model, (x, y), block_size=8, engine="autodiff")
    torch.testing.assert_close(blocked, autograd_hessian(model, x, y), rtol=1e-10, atol=1e-12)
