"""Writers for tiny files in the real dataset formats (IDX, CIFAR-10 bin/py, npz), for tests."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

IDX_STEMS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes: magic (0, 0, type, ndim), big-endian sizes, big-endian data."""
    code = _IDX_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, gzipped when the name ends in ``.gz``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def tiny_images(n: int, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, *shape)`` uint8 pixels and ``(n,)`` labels 0..9."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n).astype(
        np.uint8
    )


def write_mnist_folder(
    folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = False, side: int = 28
) -> dict[str, np.ndarray]:
    """The four MNIST IDX files in ``folder``; returns the arrays written."""
    x_train, y_train = tiny_images(n_train, (side, side), seed=1)
    x_test, y_test = tiny_images(n_test, (side, side), seed=2)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key, stem in IDX_STEMS.items():
        write_bytes(folder / (stem + (".gz" if gz else "")), idx_bytes(arrays[key]))
    return arrays


def cifar_bin_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """CIFAR-10 binary records: one label byte then 3072 pixel bytes, per image."""
    records = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(x), -1)], axis=1)
    return records.astype(np.uint8).tobytes()


def cifar_pickle_bytes(x: np.ndarray, y: np.ndarray, protocol: int, legacy: bool) -> bytes:
    """A CIFAR-10 python batch: a dict with bytes keys like the official (Python 2) files.

    ``legacy`` rewrites numpy 2's ``numpy._core`` module path to numpy 1's ``numpy.core``, as in
    the official files (only meaningful for protocol 2, whose globals are plain text).
    """
    batch = {
        b"batch_label": b"tiny batch",
        b"labels": [int(v) for v in y],
        b"data": x.reshape(len(x), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(x))],
    }
    data = pickle.dumps(batch, protocol=protocol)
    if legacy:
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    return data


CIFAR_STEMS = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def write_cifar_folder(
    root: Path, kind: str, per_batch: int = 4, protocol: int = 2, legacy: bool = True
) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-{kind}`` with five train batches and a test batch."""
    folder = root / f"cifar-10-batches-{kind}"
    xs, ys = [], []
    for i, stem in enumerate(CIFAR_STEMS):
        x, y = tiny_images(per_batch, (3, 32, 32), seed=10 + i)
        xs.append(x)
        ys.append(y)
        if kind == "bin":
            write_bytes(folder / f"{stem}.bin", cifar_bin_bytes(x, y))
        else:
            write_bytes(folder / stem, cifar_pickle_bytes(x, y, protocol, legacy))
    return {
        "x_train": np.concatenate(xs[:5]),
        "y_train": np.concatenate(ys[:5]),
        "x_test": xs[5],
        "y_test": ys[5],
    }


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """An ``.npz`` with the given arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def flat_arrays(n_train: int = 40, n_test: int = 12, features: int = 5) -> dict[str, np.ndarray]:
    """Valid flat (N, F) float arrays with labels 0..2."""
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(3.0, 2.0, (n_train, features)),
        "y_train": rng.integers(0, 3, n_train),
        "x_test": rng.normal(3.0, 2.0, (n_test, features)),
        "y_test": rng.integers(0, 3, n_test),
    }
