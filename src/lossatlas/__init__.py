"""lossatlas: map the large-scale structure of neural-network loss landscapes.

The public API, grouped by stage of the data flow
(config -> data + models -> populations -> probes -> analysis -> figures -> report).
"""

from importlib.metadata import PackageNotFoundError, version

# Claims
from lossatlas.claims import Claim, load_claims

# Configuration
from lossatlas.config import Config, ExecutionConfig, load_config

# Data and models
from lossatlas.data import Dataset, available_datasets, load_dataset, register_dataset
from lossatlas.data.batches import BatchAdapter, BatchError, Batches, LossShapeError, OutputError

# Errors
from lossatlas.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ExecutionError,
    LossAtlasError,
    StoreError,
)

# Execution and storage
from lossatlas.execute import (
    Executor,
    LocalExecutor,
    Unit,
    executor_for,
    get_executor,
    run_units,
)
from lossatlas.models import available_models, build_model, register_model

# Weight space
from lossatlas.params import ParamSelectionError, ParamSpace

# Populations
from lossatlas.populations.jump import jump_and_retrain
from lossatlas.populations.train import Population, train_population
from lossatlas.probes.curvature import (
    HessianOperator,
    count_above,
    hessian_eigenpairs,
    hessian_eigenvalues,
    hessian_trace,
    spectral_density,
)

# Probes
from lossatlas.probes.paths import Connector, Tunnel, m_connector, tunnel
from lossatlas.probes.subspace import Surface, rays, simplex_grid, surface, surface_through
from lossatlas.probes.width import TunnelWidth, tunnel_width
from lossatlas.stages import train_stage
from lossatlas.store import AtlasStore

try:
    __version__ = version("lossatlas")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AtlasStore",
    "BatchAdapter",
    "BatchError",
    "Batches",
    "CheckpointError",
    "Claim",
    "Config",
    "ConfigError",
    "Connector",
    "DataError",
    "Dataset",
    "ExecutionConfig",
    "ExecutionError",
    "Executor",
    "HessianOperator",
    "LocalExecutor",
    "LossAtlasError",
    "LossShapeError",
    "OutputError",
    "ParamSelectionError",
    "ParamSpace",
    "Population",
    "StoreError",
    "Surface",
    "Tunnel",
    "TunnelWidth",
    "Unit",
    "__version__",
    "available_datasets",
    "available_models",
    "build_model",
    "count_above",
    "executor_for",
    "get_executor",
    "hessian_eigenpairs",
    "hessian_eigenvalues",
    "hessian_trace",
    "jump_and_retrain",
    "load_claims",
    "load_config",
    "load_dataset",
    "m_connector",
    "rays",
    "register_dataset",
    "register_model",
    "run_units",
    "simplex_grid",
    "spectral_density",
    "surface",
    "surface_through",
    "train_population",
    "train_stage",
    "tunnel",
    "tunnel_width",
]
