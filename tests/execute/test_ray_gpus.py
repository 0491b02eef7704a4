"""Ray units reserve GPUs when the run's device is CUDA (the resource request, checked on CPU)."""

from __future__ import annotations

import pytest

from lossatlas.config import Config, ExecutionConfig
from lossatlas.errors import ConfigError
from lossatlas.execute.base import Unit
from lossatlas.execute.registry import ray_options


def _unit() -> Unit:
    return Unit(id="u0", fn=int, args=("1",))


@pytest.mark.parametrize(("device", "gpus"), [("cuda", 1.0), ("cpu", 0.0), ("auto", 0.0)])
def test_cuda_configs_request_one_gpu_per_unit(device: str, gpus: float) -> None:
    pytest.importorskip("ray")
    from lossatlas.execute.ray import RayExecutor

    config = Config(device=device, execution=ExecutionConfig(executor="ray"))
    options = ray_options(config, progress=False)
    assert options["gpus_per_unit"] == gpus
    executor = RayExecutor(**options)
    request = executor.task_options(_unit(), "train")
    assert request.get("num_gpus", 0.0) == gpus
    assert request["num_cpus"] == config.execution.cpus_per_unit


def test_negative_gpus_are_refused() -> None:
    pytest.importorskip("ray")
    from lossatlas.execute.ray import RayExecutor

    with pytest.raises(ConfigError, match="gpus_per_unit"):
        RayExecutor(gpus_per_unit=-1)
