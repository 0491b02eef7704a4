"""lossatlas: map the large-scale structure of neural-network loss landscapes.

The public API, grouped by stage of the data flow
(config -> data + models -> populations -> probes -> analysis -> figures -> report).
"""

from importlib.metadata import PackageNotFoundError, version

# Configuration
from lossatlas.config import Config, load_config

# Data and models
from lossatlas.data import Dataset, available_datasets, load_dataset, register_dataset

# Errors
from lossatlas.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    LossAtlasError,
    StoreError,
)

# Execution and storage
from lossatlas.execute import Executor, LocalExecutor, Unit, get_executor, run_units
from lossatlas.models import available_models, build_model, register_model

# Weight space
from lossatlas.params import ParamSpace

# Populations
from lossatlas.population import Population, train_population
from lossatlas.stages import train_stage
from lossatlas.store import AtlasStore

try:
    __version__ = version("lossatlas")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AtlasStore",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "Dataset",
    "Executor",
    "LocalExecutor",
    "LossAtlasError",
    "ParamSpace",
    "Population",
    "StoreError",
    "Unit",
    "__version__",
    "available_datasets",
    "available_models",
    "build_model",
    "get_executor",
    "load_config",
    "load_dataset",
    "register_dataset",
    "register_model",
    "run_units",
    "train_population",
    "train_stage",
]
