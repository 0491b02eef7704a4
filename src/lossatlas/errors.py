"""User-facing errors.

Every problem a user can cause (bad config, bad data, a corrupt checkpoint, a store that
belongs to another config) raises a subclass of :class:`LossAtlasError`. The CLI turns these
into one clear line and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LossAtlasError(Exception):
    """An error caused by the user's input; its message is one self-contained line."""


class ConfigError(LossAtlasError):
    """The configuration (preset, YAML file, override or option) is invalid."""


class DataError(LossAtlasError):
    """A dataset is missing, unreadable, or has wrong shapes, NaNs or bad labels."""


class CheckpointError(LossAtlasError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


class StoreError(LossAtlasError):
    """The atlas store is unusable: wrong location, read-only, or made by another config."""


class ExecutionError(LossAtlasError):
    """Units of work could not be run: the cluster is unreachable or a unit was lost."""
