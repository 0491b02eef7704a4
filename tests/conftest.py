"""Shared fixtures: tiny seeded models and data so every test runs in milliseconds."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn


def _share_threads_between_workers() -> None:
    """Under pytest-xdist, give each of the N workers 1/N of this machine's cores.

    Without this, every worker (and every run it starts as a subprocess, which inherits the
    environment) uses all cores, and N workers oversubscribe them with N x cores threads.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return
    share = max(1, len(os.sched_getaffinity(0)) // workers)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(share)
    torch.set_num_threads(share)


_share_threads_between_workers()


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    # The library never uses global RNG state; tests seed it only for building tiny fixtures.
    torch.manual_seed(0)


def tiny_mlp(inputs: int = 5, hidden: int = 7, classes: int = 3) -> nn.Module:
    """A 2-layer tanh MLP small enough for dense Hessians."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, classes))


def blobs(
    n: int = 64,
    inputs: int = 5,
    classes: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable-ish Gaussian blobs: X (n, inputs), y (n,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centers = torch.randn(classes, inputs, generator=g, dtype=dtype) * 2
    x = centers[y] + torch.randn(n, inputs, generator=g, dtype=dtype)
    return x, y
