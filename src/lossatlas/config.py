"""Validated configuration: pydantic models of every option, YAML presets, dotted overrides.

Precedence, lowest to highest: model defaults < preset < ``--config`` file < ``key=value``
overrides < explicit CLI flags. Unknown keys are errors (``extra="forbid"``), so a typo never
silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lossatlas.errors import ConfigError

__all__ = [
    "CORE_SECTIONS",
    "DEFAULT_THRESHOLDS",
    "RUNTIME_SECTIONS",
    "Config",
    "CountOptions",
    "CurvatureOptions",
    "DataConfig",
    "ExecutionConfig",
    "ModelConfig",
    "ScheduleConfig",
    "StrictModel",
    "SurfaceOptions",
    "TrainConfig",
    "WidthOptions",
    "apply_overrides",
    "available_presets",
    "core_config",
    "fingerprint_dump",
    "load_config",
]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys and wrong types are errors.

    A section given in part (a preset's ``tunnel: {points: 7}``) keeps the section's *default*
    values for the rest, including defaults a study sets through ``default_factory`` (such as
    the wedge study's tunnel tolerance), not only the section class's own defaults.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _partial_sections_keep_their_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, info in cls.model_fields.items():
            given = merged.get(name)
            if not isinstance(given, dict) or info.default_factory is None:
                continue
            default = info.default_factory()  # type: ignore[call-arg]
            if isinstance(default, BaseModel):
                merged[name] = _deep_merge(default.model_dump(), given)
        return merged


class DataConfig(StrictModel):
    """Which dataset, and how it is split, corrupted and augmented."""

    name: str = Field(
        "mnist1d", description="registry name: mnist1d, digits, npz, mnist, fashion_mnist, cifar10"
    )
    path: Path | None = Field(
        None, description="file or folder for npz / mnist / fashion_mnist / cifar10"
    )
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of train held out")
    label_noise: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="probability p that a train label is replaced by a uniform random class",
    )
    augment: bool = Field(False, description="random crop + flip for images (ignored for 1-D)")
    n_train: int | None = Field(None, gt=0, description="use only the first n train samples")
    n_test: int | None = Field(None, gt=0, description="use only the first n test samples")
    seed: int = Field(0, description="seed for the split, subsampling and label noise")


class ModelConfig(StrictModel):
    """Which architecture. ``None`` means the architecture's own default."""

    name: str = Field("mlp", description="registry name: mlp, cnn1d, simplecnn, resnet, wrn")
    width: int | None = Field(None, gt=0, description="hidden units (mlp) or base channels")
    depth: int | None = Field(
        None,
        gt=0,
        description="hidden layers (mlp), conv blocks "
        "(cnn1d), or total depth (resnet 6n+2, wrn 6n+4)",
    )
    activation: Literal["relu", "tanh", "gelu"] | None = None
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    width_multiplier: float = Field(1.0, gt=0.0, description="scales every hidden width")
    batchnorm: bool | None = Field(None, description="BatchNorm after hidden layers")


class ScheduleConfig(StrictModel):
    """Learning-rate schedule, as a multiplier of the base LR per step."""

    kind: Literal["constant", "step", "cosine", "cyclic"] = "constant"
    milestones: list[float] = Field(
        default_factory=list, description="step: epochs at which the LR is multiplied by gamma"
    )
    gamma: float = Field(0.1, gt=0.0)
    min_factor: float = Field(
        0.0, ge=0.0, le=1.0, description="cosine/cyclic: lowest LR as a fraction of the base"
    )
    cycle_epochs: float = Field(1.0, gt=0.0, description="cyclic: length of one cycle")


class TrainConfig(StrictModel):
    """A population of members trained in lock-step."""

    members: int = Field(4, gt=0)
    epochs: int = Field(10, ge=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum, or Adam beta1")
    beta2: float = Field(0.999, gt=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    start: Literal["independent", "shared"] = Field(
        "independent", description="per-member init seeds, or one shared start point"
    )
    snapshot_every: int = Field(0, ge=0, description="store params every N units (0: never)")
    snapshot_unit: Literal["epoch", "step"] = "epoch"
    members_per_unit: int = Field(
        16, gt=0, description="members trained together as one unit of work (the fan-out grain)"
    )
    eval_batch_size: int = Field(2048, gt=0)
    compile: bool = Field(False, description="torch.compile the vectorised step")


class ExecutionConfig(StrictModel):
    """Where units of work run. Not part of any fingerprint: results do not depend on it."""

    executor: Literal["local", "processes", "ray"] = Field(
        "local",
        description="local: in this process, in order; processes: a pool of worker processes "
        "on this machine, one per cpus_per_unit cores; ray: fanned out over a cluster",
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join ('auto', 'ray://host:10001', 'host:6379'); "
        "default: start a local Ray instance",
    )
    max_retries: int = Field(
        3, ge=0, description="times Ray re-runs a unit whose worker died (not on Python errors)"
    )
    cpus_per_unit: float = Field(
        1.0,
        gt=0.0,
        description="CPUs per unit, for ray and processes (Ray reserves them; processes runs "
        "cores / cpus_per_unit workers); also each unit's torch thread count",
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="processes: worker processes at once; default one per cpus_per_unit "
        "cores, capped at one per GiB of available memory",
    )
    overlap_studies: bool = Field(
        True,
        description="processes: run the geometry & topology study in a process of its own "
        "(one torch thread) beside the wedge study, to use the cores the wedge study leaves "
        "idle (folder stores only; local and ray run the studies one after the other)",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="torch threads of the process running the command (local units and each "
        "step's own work); default: torch's choice, one per core. On a busy machine fewer "
        "threads avoid torch's thread pool stalling behind other processes",
    )


class Config(StrictModel):
    """Everything one lossatlas run needs."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Config:
        if (
            self.data.name in {"npz", "mnist", "fashion_mnist", "cifar10"}
            and self.data.path is None
        ):
            raise ValueError(f"data.path is required for data.name={self.data.name}")
        return self


# Sections every stage shares; study sections (RunConfig) extend these.
CORE_SECTIONS = frozenset({"seed", "device", "dtype", "data", "model", "train", "execution"})
# Sections that say where work runs, not what it computes: free to change between runs of one
# store, so they are left out of every fingerprint.
RUNTIME_SECTIONS = frozenset({"device", "execution"})


def core_config(config: Config) -> Config:
    """Just the core sections of ``config`` (drops study sections of a RunConfig)."""
    return Config.model_validate(config.model_dump(include=set(CORE_SECTIONS)))


# --------------------------------------------------------------------------- loading

ConfigT = TypeVar("ConfigT", bound=Config)


def available_presets() -> list[str]:
    """Names of the presets shipped in ``lossatlas/presets``."""
    folder = resources.files("lossatlas") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: malformed YAML{where}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: expected a mapping of options, got {type(loaded).__name__}")
    return loaded


def _preset_dict(name: str) -> dict[str, Any]:
    if name not in available_presets():
        raise ConfigError(
            f"preset '{name}' not found (available: {', '.join(available_presets())})"
        )
    text = (resources.files("lossatlas") / "presets" / f"{name}.yaml").read_text()
    return _read_yaml(text, f"preset {name}")


def _file_dict(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file unreadable: {path} ({exc})") from exc
    return _read_yaml(text, str(path))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(tree: dict[str, Any], key: str, value: Any, source: str) -> None:
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides; values are parsed as YAML scalars or lists."""
    tree = _deep_merge({}, tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.lr=0.1)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML") from exc
        _set_dotted(tree, key, value, f"override '{item}'")
    return tree


def format_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown option"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid config: {where}: {message}{more}"


def validate_config(tree: dict[str, Any], schema: type[ConfigT] = Config) -> ConfigT:  # type: ignore[assignment]
    """Build a config (``schema``, default :class:`Config`) from a plain dict.

    Raises :class:`ConfigError` with one line on any validation error.
    """
    try:
        return schema.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc


def load_config(
    preset: str | None = None,
    file: Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
    schema: type[ConfigT] = Config,  # type: ignore[assignment]
) -> ConfigT:
    """Resolve preset, file, overrides and CLI flags (dotted keys) into a validated config.

    ``schema`` is the config class to validate against (``RunConfig`` adds the studies).
    """
    tree: dict[str, Any] = _preset_dict(preset) if preset else {}
    if file is not None:
        tree = _deep_merge(tree, _file_dict(file))
    tree = apply_overrides(tree, list(overrides or []))
    for key, value in (flags or {}).items():
        if value is not None:  # an option the user did not give leaves the config alone
            _set_dotted(tree, key, value, f"option {key}")
    return validate_config(tree, schema)


# --------------------------------------------------------------------------- probe options


# An options field marked so is fingerprinted only when it is set away from its default: a field
# added to an options model then leaves the fingerprints of runs made before it as they were, so
# those runs resume instead of conflicting with their own store.
WHEN_SET: dict[str, Any] = {"fingerprint": "when_set"}


def fingerprint_dump(options: BaseModel, exclude: Collection[str] = ()) -> dict[str, Any]:
    """``options`` as JSON for a fingerprint: the fields in ``exclude`` left out, and so is every
    field marked :data:`WHEN_SET` while it holds its default."""
    skipped = set(exclude)
    for name, field in type(options).model_fields.items():
        extra = field.json_schema_extra
        if not (isinstance(extra, dict) and extra.get("fingerprint") == "when_set"):
            continue
        if getattr(options, name) == field.get_default(call_default_factory=True):
            skipped.add(name)
    return options.model_dump(mode="json", exclude=skipped)


def _autocast_field() -> Any:
    return Field(
        None,
        description="run the forward passes under torch.autocast in bf16 or fp16 (default off: "
        "full precision); the loss error this makes against full precision is reported",
        json_schema_extra=WHEN_SET,
    )


class WidthOptions(StrictModel):
    """``lossatlas width``: tunnel width along random directions (PAPERS A6)."""

    n_directions: int = Field(32, gt=0)
    threshold: float = Field(0.1, gt=0.0, description="loss rise that ends the tunnel")
    threshold_mode: Literal["absolute", "additive", "multiplicative"] = "additive"
    direction_kind: Literal["gaussian", "filter"] = "gaussian"
    max_distance: float = Field(100.0, gt=0.0)
    initial_step: float = Field(
        0.01,
        gt=0.0,
        description="the scan's first distance; it doubles from there until the loss passes "
        "the threshold (a crossing below it is still found, by the root search from 0)",
        json_schema_extra=WHEN_SET,
    )
    tol: float = Field(1e-3, gt=0.0, lt=1.0, description="relative tolerance of the root search")
    split: Literal["train", "val", "test"] = "train"
    seed: int = 0
    snapshots: bool = Field(
        False,
        description="also track width over the member's stored "
        "training snapshots (needs train.snapshot_every > 0)",
    )
    autocast: Literal["bf16", "fp16"] | None = _autocast_field()


class SurfaceOptions(StrictModel):
    """``lossatlas surface``: the loss on a line or plane around a trained point."""

    directions: Literal["filter", "gaussian", "pca", "eigen"] = Field(
        "filter",
        description="Li et al. filter-normalised, plain Gaussian, PCA of the "
        "member's training snapshots, or the top Hessian eigenvectors",
    )
    dims: Literal[1, 2] = 2
    span: float = Field(1.0, gt=0.0, description="coordinates run from -span to span")
    steps: int = Field(51, ge=3)
    seed: int = 0
    split: Literal["train", "val", "test"] = "train"
    bn_recompute: bool = Field(
        False, description="recompute BatchNorm statistics at every point on the train inputs"
    )
    row_chunks: int = Field(
        4,
        ge=1,
        description="units of work the grid is split into, by rows of its first axis (at most "
        "one per row); says where the work runs, not what it computes, so it may change "
        "between runs of one probe",
    )
    autocast: Literal["bf16", "fp16"] | None = _autocast_field()


# Curvature thresholds of the wedge paper's short-direction counts (PAPERS A4).
DEFAULT_THRESHOLDS = (0.01, 0.02, 0.03, 0.05, 0.1)


class CountOptions(StrictModel):
    """Short-direction counts: Hessian eigenvalues above curvature thresholds (PAPERS A4).

    Shared by the ``curvature`` command (:class:`CurvatureOptions`) and the wedge study, which
    gives it its own defaults.
    """

    thresholds: list[float] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    method: Literal["auto", "exact", "slq"] = Field(
        "auto",
        description="exact (dense Hessian) for small D, stochastic Lanczos quadrature otherwise",
    )
    num_probes: int = Field(8, gt=0, description="SLQ probe vectors")
    lanczos_steps: int = Field(80, gt=1, description="SLQ Lanczos steps per probe")
    eval_samples: int | None = Field(None, gt=0, description="train samples (default: all)")


class CurvatureOptions(CountOptions):
    """``lossatlas curvature``: Hessian spectrum, trace and short-direction counts."""

    k: int = Field(20, gt=0, description="top eigenvalues by Lanczos")
    trace_matvecs: int = Field(60, gt=2)
    seed: int = 0
