"""Probe stages fanned out as jobs: the same numbers as one direct call, resumable by job.

One tiny population (a 40->8->10 MLP on 128 MNIST-1D samples, one epoch, with snapshots) is
trained once for the module; checkpoint targets use a BatchNorm variant's template weights.
Every stage runs on a local executor; Ray runs the same parts (tested with the executor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lossatlas.checkpoint import save_checkpoint
from lossatlas.config import Config, CurvatureOptions, SurfaceOptions, load_config
from lossatlas.context import run_dataset, template_model
from lossatlas.execute import LocalExecutor, Unit
from lossatlas.probes.curvature import (
    count_above,
    hessian_eigenpairs,
    hessian_eigenvalues,
    hessian_trace,
    spectral_density,
)
from lossatlas.probes.subspace import Surface, pca_directions, surface
from lossatlas.seeding import make_generator
from lossatlas.stages.curvature import curvature_stage
from lossatlas.stages.probes import ProbeRequest
from lossatlas.stages.surface import row_blocks, surface_stage
from lossatlas.stages.target import Target
from lossatlas.stages.train import TRAIN_GROUP, train_stage
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig

_TINY = [
    "train.members=1",
    "train.epochs=1",
    "data.n_train=128",
    "data.n_test=64",
    "model.width=8",
    "model.depth=1",
]
_CURVATURE = CurvatureOptions(
    k=3, num_probes=2, lanczos_steps=8, trace_matvecs=6, eval_samples=64, seed=3
)


class RecordingExecutor:
    """Runs units locally and records their ids; stops after ``limit`` units (a "kill")."""

    def __init__(self, limit: int | None = None) -> None:
        self.ran: list[str] = []
        self.limit = limit

    def map(self, units: Sequence[Unit], *, description: str = "") -> list[Any]:
        results = []
        for unit in units:
            if self.limit is not None and len(self.ran) >= self.limit:
                raise KeyboardInterrupt("killed")
            # The wrapped unit's args are (out, group, original unit): record the original id.
            self.ran.append(unit.args[2].id)
            results.append(unit())
        return results


def _config(*extra: str) -> Config:
    return load_config("smoke", overrides=[*_TINY, *extra], schema=RunConfig)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jobs") / "run"
    train_stage(_config(), out, executor=LocalExecutor(progress=False))
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    """A BatchNorm MLP's template weights as a user checkpoint, with its config."""
    config = _config("model.batchnorm=true")
    path = tmp_path_factory.mktemp("ck") / "bn.safetensors"
    save_checkpoint(path, template_model(config, run_dataset(config)))
    return path, config


def _target(request: ProbeRequest) -> Target:
    return request.open()[1]


def _plain_surface(target: Target, options: SurfaceOptions) -> Surface:
    """One :func:`surface` call over the whole grid, as the stage did before it had jobs."""
    directions: Any = options.directions
    if directions == "eigen":
        data = target.dataset.split("train")
        common = {"params": target.params, "buffers": target.buffers}
        directions = hessian_eigenpairs(target.model, data, k=options.dims, **common)[1]
    elif directions == "pca":
        store = AtlasStore.open(target.out, read_only=True)
        trajectory = torch.as_tensor(store.read(f"{TRAIN_GROUP}/snapshots", (target.member,)))
        directions = pca_directions(
            trajectory.to(target.params), k=options.dims, center=target.params
        )
    return surface(
        target.load_into_model(),
        target.dataset,
        center=target.params,
        directions=directions,
        span=options.span,
        steps=options.steps,
        dims=options.dims,
        seed=options.seed,
        split=options.split,
        bn_data=target.dataset.split("train")[0] if options.bn_recompute else None,
    )


def _assert_same_surface(store: AtlasStore, group: str, plain: Surface) -> None:
    np.testing.assert_allclose(store.read(f"{group}/loss"), plain.loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(store.read(f"{group}/accuracy"), plain.accuracy.numpy(), rtol=1e-5)
    for k, coords in enumerate(plain.coords):
        # Blocks slice the full grid's coordinates, so they are exact.
        np.testing.assert_array_equal(store.read(f"{group}/coords_{k}"), coords.numpy())
    np.testing.assert_array_equal(store.read(f"{group}/directions"), plain.directions.numpy())
    np.testing.assert_array_equal(store.read(f"{group}/center"), plain.center.numpy())


# --------------------------------------------------------------------------- surface


def test_row_blocks_cover_the_rows_once() -> None:
    assert row_blocks(7, 3) == [(0, 2), (2, 4), (4, 7)]
    assert row_blocks(3, 10) == [(0, 1), (1, 2), (2, 3)]  # at most one block per row
    assert row_blocks(5, 1) == [(0, 5)]


@pytest.mark.parametrize(
    ("dims", "row_chunks", "directions"),
    [(1, 3, "filter"), (2, 4, "gaussian"), (2, 50, "filter"), (2, 2, "pca"), (1, 2, "eigen")],
)
def test_chunked_surface_equals_one_call(
    trained: Path, dims: int, row_chunks: int, directions: str
) -> None:
    options = SurfaceOptions(
        dims=dims, steps=7, span=0.5, seed=2, row_chunks=row_chunks, directions=directions
    )
    name = f"d{dims}-c{row_chunks}-{directions}"
    request = ProbeRequest(out=trained)
    group, ran = surface_stage(request, options, name, executor=LocalExecutor(progress=False))
    assert ran
    store = AtlasStore.open(trained, read_only=True)
    _assert_same_surface(store, group, _plain_surface(_target(request), options))
    assert store.read(f"{group}/loss").shape == (7,) * dims
    blocks = [f"rows-{a:04d}-{b:04d}" for a, b in row_blocks(7, row_chunks)]
    assert store.completed_units(f"{group}/jobs") == blocks
    assert store.unit_done(f"{group}/jobs/setup", "directions")
    result = store.attrs(group)["result"]
    assert result["points"] == 7**dims
    assert result["loss_min"] <= result["loss_center"] <= result["loss_max"]
    figure = "surface_line.png" if dims == 1 else "surface_contour.png"
    assert store.has(f"{group}/figures/{figure}")


def test_surface_jobs_resume_and_row_chunks_are_not_fingerprinted(trained: Path) -> None:
    options = SurfaceOptions(dims=2, steps=6, span=0.4, row_chunks=3)
    request = ProbeRequest(out=trained)
    killed = RecordingExecutor(limit=2)  # the directions and the first block of rows
    with pytest.raises(KeyboardInterrupt):
        surface_stage(request, options, "resume", executor=killed)
    assert killed.ran == ["directions", "rows-0000-0002"]

    resumed = RecordingExecutor()
    _, ran = surface_stage(request, options, "resume", executor=resumed)
    assert ran and resumed.ran == ["rows-0002-0004", "rows-0004-0006"]
    store = AtlasStore.open(trained, read_only=True)
    _assert_same_surface(store, "probes/surface/resume", _plain_surface(_target(request), options))

    again = RecordingExecutor()
    other_split = options.model_copy(update={"row_chunks": 2})  # how it runs, not what
    _, ran = surface_stage(request, other_split, "resume", executor=again)
    assert not ran and again.ran == []


def test_surface_on_a_checkpoint_with_batchnorm_recompute(
    tmp_path: Path, checkpoint: tuple[Path, Config]
) -> None:
    path, config = checkpoint
    request = ProbeRequest(out=tmp_path / "ck", checkpoint=path, config=config)
    options = SurfaceOptions(dims=2, steps=5, span=0.5, row_chunks=2, bn_recompute=True)
    group, ran = surface_stage(request, options, executor=LocalExecutor(progress=False))
    assert ran
    target = _target(request)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in target.model.modules())
    store = AtlasStore.open(tmp_path / "ck", read_only=True)
    _assert_same_surface(store, group, _plain_surface(target, options))
    assert store.completed_units(f"{group}/jobs") == ["rows-0000-0002", "rows-0002-0005"]


# --------------------------------------------------------------------------- curvature


def _direct_curvature(target: Target, options: CurvatureOptions) -> dict[str, Any]:
    """The four estimators called directly, with the stage's data and generators."""
    x, y = target.dataset.split("train")
    data = (x[: options.eval_samples], y[: options.eval_samples])
    common: dict[str, Any] = {"params": target.params, "buffers": target.buffers}
    eigenvalues = hessian_eigenvalues(
        target.model, data, k=min(options.k, target.space.dim - 1), **common
    )
    trace = hessian_trace(
        target.model,
        data,
        num_matvecs=options.trace_matvecs,
        generator=make_generator(options.seed, "curvature", "trace"),
        **common,
    )
    density = spectral_density(
        target.model,
        data,
        num_probes=options.num_probes,
        lanczos_steps=options.lanczos_steps,
        generator=make_generator(options.seed, "curvature", "slq"),
        **common,
    )
    counts = count_above(
        target.model,
        data,
        thresholds=options.thresholds,
        method=options.method,
        num_probes=options.num_probes,
        lanczos_steps=options.lanczos_steps,
        generator=make_generator(options.seed, "curvature", "counts"),
        **common,
    )
    return {
        "eigenvalues": eigenvalues.numpy(),
        "trace": float(trace),
        "density_nodes": density.nodes.numpy(),
        "density_weights": density.weights.numpy(),
        "counts": counts,
    }


def _assert_same_curvature(store: AtlasStore, group: str, direct: dict[str, Any]) -> None:
    for name in ("eigenvalues", "density_nodes", "density_weights"):
        np.testing.assert_allclose(store.read(f"{group}/{name}"), direct[name], rtol=1e-6)
    counts = direct["counts"]
    np.testing.assert_array_equal(store.read(f"{group}/count_thresholds"), list(counts))
    np.testing.assert_allclose(store.read(f"{group}/counts"), list(counts.values()), rtol=1e-6)
    result = store.attrs(group)["result"]
    assert result["trace"] == pytest.approx(direct["trace"], rel=1e-6)
    assert result["top_eigenvalue"] == pytest.approx(float(direct["eigenvalues"][0]), rel=1e-6)
    for threshold, count in counts.items():
        assert result[f"count_above_{threshold:g}"] == pytest.approx(count, rel=1e-6)
    grid, density = store.read(f"{group}/density_grid"), store.read(f"{group}/density")
    assert grid.shape == density.shape == (400,) and np.isfinite(density).all()
    assert store.has(f"{group}/figures/spectrum.png") and store.has(
        f"{group}/figures/spectrum.html"
    )


def test_curvature_jobs_equal_direct_calls_and_resume(trained: Path) -> None:
    request = ProbeRequest(out=trained)
    killed = RecordingExecutor(limit=2)
    with pytest.raises(KeyboardInterrupt):
        curvature_stage(request, _CURVATURE, executor=killed)
    assert killed.ran == ["eigenvalues", "trace"]

    resumed = RecordingExecutor()
    group, ran = curvature_stage(request, _CURVATURE, executor=resumed)
    assert ran and resumed.ran == ["density", "counts"]
    store = AtlasStore.open(trained, read_only=True)
    _assert_same_curvature(store, group, _direct_curvature(_target(request), _CURVATURE))
    assert store.completed_units(f"{group}/jobs") == ["counts", "density", "eigenvalues", "trace"]
    assert store.attrs(group)["result"]["dim"] == _target(request).space.dim

    again = RecordingExecutor()
    assert curvature_stage(request, _CURVATURE, executor=again) == (group, False)
    assert again.ran == []


def test_curvature_on_a_checkpoint(tmp_path: Path, checkpoint: tuple[Path, Config]) -> None:
    path, config = checkpoint
    request = ProbeRequest(out=tmp_path / "ck", checkpoint=path, config=config)
    group, ran = curvature_stage(request, _CURVATURE, executor=LocalExecutor(progress=False))
    assert ran
    store = AtlasStore.open(tmp_path / "ck", read_only=True)
    _assert_same_curvature(store, group, _direct_curvature(_target(request), _CURVATURE))
