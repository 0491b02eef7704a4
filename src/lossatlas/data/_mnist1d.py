"""MNIST-1D, generated offline with the ``mnist1d`` package (never downloaded).

``make_dataset`` seeds numpy's and Python's global RNGs itself; lossatlas keeps no global RNG
state, so both are saved before and restored after generation. Generation takes about a
second, so the result is cached in-process.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from lossatlas.errors import DataError

__all__ = ["generate_mnist1d"]


@functools.lru_cache(maxsize=4)
def _generate(generation_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise DataError(
            f"data.name=mnist1d needs the 'mnist1d' package ({exc}); pip install mnist1d"
        ) from exc
    args = get_dataset_args()  # standard: 5000 samples, 80/20 split, length 40, 10 classes
    args.seed = generation_seed
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        generated = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    arrays = (
        np.asarray(generated["x"], dtype=np.float32),
        np.asarray(generated["y"], dtype=np.int64),
        np.asarray(generated["x_test"], dtype=np.float32),
        np.asarray(generated["y_test"], dtype=np.int64),
    )
    for array in arrays:
        array.setflags(write=False)  # shared by every caller through the cache
    return arrays


# The seed of the published MNIST-1D dataset (mnist1d's get_dataset_args default).
CANONICAL_SEED = 42


def generate_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The canonical MNIST-1D dataset, generated locally with the published seed.

    Always the same data, so accuracies compare with the literature; ``data.seed`` varies
    only the validation split, subsampling and label noise applied afterwards.

    Returns read-only ``x_train`` ``(4000, 40)`` float32, ``y_train`` ``(4000,)`` int64,
    ``x_test`` ``(1000, 40)`` and ``y_test`` ``(1000,)``.
    """
    return _generate(CANONICAL_SEED)
