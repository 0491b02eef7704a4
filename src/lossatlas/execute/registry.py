"""Choosing an executor: by name, or the one a config's ``execution`` section asks for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lossatlas.config import Config, ExecutionConfig
from lossatlas.errors import ConfigError
from lossatlas.execute.base import Executor, unit_threads
from lossatlas.execute.local import LocalExecutor
from lossatlas.execute.processes import ProcessExecutor

__all__ = ["executor_for", "get_executor", "ray_options"]


def _ray_executor(**options: Any) -> Executor:
    # Imported on demand: Ray is an optional extra and slow to import.
    from lossatlas.execute.ray import RayExecutor

    return RayExecutor(**options)


_EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": LocalExecutor,
    "processes": ProcessExecutor,
    "ray": _ray_executor,
}


def get_executor(name: str = "local", **options: Any) -> Executor:
    """The executor called ``name``, built with ``options`` (e.g. ``progress=False``)."""
    factory = _EXECUTORS.get(name)
    if factory is None:
        available = ", ".join(sorted(_EXECUTORS))
        raise ConfigError(f"unknown executor '{name}' (available: {available})")
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"executor '{name}' does not accept options {sorted(options)}") from exc


def ray_options(
    config: Config | ExecutionConfig, *, progress: bool | None = None
) -> dict[str, Any]:
    """The :class:`~lossatlas.execute.ray.RayExecutor` options a config asks for.

    A config whose ``device`` is ``cuda`` reserves one GPU per unit (Ray's ``num_gpus``), so
    that units run on GPU workers rather than on CPU ones.
    """
    execution = config.execution if isinstance(config, Config) else config
    cuda = isinstance(config, Config) and config.device == "cuda"
    return {
        "address": execution.ray_address,
        "max_retries": execution.max_retries,
        "cpus_per_unit": execution.cpus_per_unit,
        "gpus_per_unit": 1.0 if cuda else 0.0,
        "progress": progress,
    }


def executor_for(config: Config | ExecutionConfig, *, progress: bool | None = None) -> Executor:
    """The executor a config's ``execution`` section asks for, connected and ready.

    Call it before creating a store, so that an unreachable cluster leaves nothing behind.
    """
    execution = config.execution if isinstance(config, Config) else config
    if execution.executor == "ray":
        executor = get_executor("ray", **ray_options(config, progress=progress))
        # Join the cluster now: a bad address or a missing extra fails before any work.
        executor.connect()  # type: ignore[attr-defined]
        return executor
    if execution.executor == "processes":
        # cpus_per_unit means the same as on Ray: each unit's cores, and its torch threads.
        threads = unit_threads(execution.cpus_per_unit)
        return get_executor(
            "processes", workers=execution.workers, threads=threads, progress=progress
        )
    return get_executor(execution.executor, progress=progress)
