"""dense_hessian's columns on several Python threads (one torch thread each), for the autodiff
and the chain engines: the same Hessian as one thread, bit for bit, and the exact one against
autograd in float64."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import torch

from lossatlas.config import ModelConfig
from lossatlas.models import build_model
from lossatlas.probes.curvature import _chain, dense, dense_hessian
from tests.probes.test_curvature_head import autograd_hessian


@pytest.fixture
def threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def count_pools(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[int]:
    """Counts the thread pools ``module`` starts (its ``on_threads`` calls)."""
    calls: list[int] = []
    real = module.on_threads

    def counted(*args: object) -> None:
        calls.append(1)
        real(*args)

    monkeypatch.setattr(module, "on_threads", counted)
    return calls


def _problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = build_model(ModelConfig(name="cnn1d", width=3), (24,), 4, seed=0).double()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 24, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=generator)
    return model, x, y


def on_one_then_two_threads(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, **kwargs: Any
) -> list[int]:
    """``dense_hessian(**kwargs)`` on the test problem on 1 and on 2 threads: both must equal
    each other bit for bit and autograd in float64; returns the pools started on 2 threads."""
    model, x, y = _problem()
    pools = count_pools(monkeypatch, module)
    torch.set_num_threads(1)
    single = dense_hessian(model, (x, y), **kwargs)
    assert pools == []  # one thread: no pool
    torch.set_num_threads(2)
    pooled = dense_hessian(model, (x, y), **kwargs)
    assert torch.get_num_threads() == 2  # restored after the pool
    torch.testing.assert_close(pooled, single, rtol=0, atol=0)
    torch.testing.assert_close(pooled, autograd_hessian(model, x, y), rtol=1e-10, atol=1e-12)
    return pools


def test_threaded_columns_equal_one_thread_and_autograd(
    threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools = on_one_then_two_threads(
        monkeypatch, dense, batch_size=16, block_size=1, engine="autodiff"
    )
    assert len(pools) == 3  # one pool per sample chunk (40 samples in chunks of 16)


def test_vmapped_blocks_take_no_threads(threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Blocks of several columns are vmapped: one call each, nothing to spread over threads.
    model, x, y = _problem()
    monkeypatch.setattr(dense, "on_threads", lambda *args: pytest.fail("threads used"))
    torch.set_num_threads(2)
    blocked = dense_hessian(model, (x, y), block_size=8, engine="autodiff")
    torch.testing.assert_close(blocked, autograd_hessian(model, x, y), rtol=1e-10, atol=1e-12)


def test_chain_threads_equal_one_thread_bit_for_bit(
    threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plain chain: the chain engine, one pool for its one sample chunk.
    assert on_one_then_two_threads(monkeypatch, _chain, block_size=3) == [1]
