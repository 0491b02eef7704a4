"""Built-in loaders: each reads or generates one dataset and returns :class:`RawData`.

Loaders only read; splitting, standardisation and label noise happen in
:func:`lossatlas.data.load_dataset`, identically for every dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lossatlas.config import DataConfig
from lossatlas.data._formats import read_cifar_bin, read_cifar_pickle, read_idx, read_npz
from lossatlas.data._mnist1d import generate_mnist1d
from lossatlas.data.dataset import RawData
from lossatlas.errors import DataError
from lossatlas.seeding import numpy_rng

__all__ = [
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_mnist1d",
    "load_npz",
]

DIGITS_TEST_FRACTION = 0.2

_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = "test_batch"


def _no_path(cfg: DataConfig) -> None:
    # A path that is silently ignored hides a mistake (e.g. a wrong data.name).
    if cfg.path is not None:
        raise DataError(
            f"data.path is not used by data.name={cfg.name} (it needs no files); "
            "remove data.path or pick a file-based dataset"
        )


def _need_path(cfg: DataConfig, kind: str) -> Path:
    if cfg.path is None:
        raise DataError(f"data.path is required for data.name={cfg.name} ({kind})")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DataError(f"data.path {path} does not exist (data.name={cfg.name} needs {kind})")
    return path


def _scale_uint8(x: np.ndarray) -> np.ndarray:
    """8-bit pixels -> float32 in [0, 1]; other dtypes are kept (standardised later anyway)."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x


def load_mnist1d(cfg: DataConfig) -> RawData:
    """MNIST-1D: the canonical 4000 train / 1000 test signals of length 40, 10 classes."""
    _no_path(cfg)
    x_train, y_train, x_test, y_test = generate_mnist1d()
    return RawData(
        x_train, y_train, x_test, y_test, num_classes=10, is_image=False, source="mnist1d"
    )


def load_digits(cfg: DataConfig) -> RawData:
    """scikit-learn's 8x8 digits (1797 samples, shipped with sklearn), flattened to ``(64,)``.

    Pixels 0..16 are scaled to [0, 1]; the train/test split (80/20) is a permutation drawn
    from ``cfg.seed``.
    """
    _no_path(cfg)
    from sklearn.datasets import load_digits as sklearn_digits  # slow import, only when used

    x, y = sklearn_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = numpy_rng(cfg.seed, "data", "digits", "test_split").permutation(len(y))
    n_test = round(DIGITS_TEST_FRACTION * len(y))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return RawData(
        x[train], y[train], x[test], y[test], num_classes=10, is_image=False, source="digits"
    )


def load_npz(cfg: DataConfig) -> RawData:
    """A user ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    ``x`` is ``(N, F)`` features or ``(N, C, H, W)`` images (uint8 images are scaled to
    [0, 1]). An optional scalar ``num_classes`` array fixes the class count; otherwise it is
    ``max(label) + 1``.
    """
    path = _need_path(cfg, "an .npz file")
    if path.is_dir():
        raise DataError(f"data.path {path} is a folder; data.name=npz needs an .npz file")
    arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.ndim not in (2, 4):
            raise DataError(
                f"{path}: {name} must be (N, features) or (N, C, H, W), got shape {x.shape}"
            )
    num_classes = None
    if "num_classes" in arrays:
        value = arrays["num_classes"]
        if value.shape != () or not np.issubdtype(value.dtype, np.integer):
            raise DataError(f"{path}: num_classes must be a scalar integer, got {value!r}")
        num_classes = int(value)
    is_image = x_train.ndim == 4
    if is_image:
        x_train, x_test = _scale_uint8(x_train), _scale_uint8(x_test)
    return RawData(
        x_train,
        arrays["y_train"],
        x_test,
        arrays["y_test"],
        num_classes=num_classes,
        is_image=is_image,
        source=str(path),
    )


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``folder`` (the uncompressed one first: faster)."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_set(cfg: DataConfig, torchvision_name: str) -> RawData:
    """MNIST-style IDX files in ``cfg.path`` or torchvision's ``<path>/<Name>/raw``."""
    root = _need_path(cfg, "a folder of IDX files")
    if not root.is_dir():
        raise DataError(f"data.path {root} is not a folder (data.name={cfg.name} needs IDX files)")
    folders = [root, root / torchvision_name / "raw", root / "raw"]
    folder = next(
        (f for f in folders if any(_idx_file(f, stem) for stem in _IDX_FILES.values())), None
    )
    if folder is None:
        raise DataError(
            f"{cfg.name}: no IDX files in {root} (expected {_IDX_FILES['x_train']}[.gz] and "
            f"the other three there or in {torchvision_name}/raw/)"
        )
    arrays = {}
    for key, stem in _IDX_FILES.items():
        path = _idx_file(folder, stem)
        if path is None:
            raise DataError(f"{cfg.name}: {folder} lacks {stem} (or {stem}.gz)")
        array = read_idx(path)
        want = 3 if key.startswith("x") else 1
        if array.ndim != want:
            raise DataError(f"{path}: expected a {want}-D IDX array, got shape {array.shape}")
        arrays[key] = _scale_uint8(array[:, None]) if want == 3 else array.astype(np.int64)
    return RawData(
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        num_classes=10,
        is_image=True,
        source=str(folder),
    )


def load_mnist(cfg: DataConfig) -> RawData:
    """MNIST from the four standard IDX files (optionally gzipped)."""
    return _load_idx_set(cfg, "MNIST")


def load_fashion_mnist(cfg: DataConfig) -> RawData:
    """Fashion-MNIST from the four standard IDX files (optionally gzipped)."""
    return _load_idx_set(cfg, "FashionMNIST")


def _cifar_layout(root: Path) -> tuple[Path, str]:
    """The folder holding the CIFAR-10 batches and its kind, ``bin`` or ``py``.

    The binary version wins when both are present: it needs no unpickling.
    """
    candidates = [
        (root / "cifar-10-batches-bin", "bin"),
        (root / "cifar-10-batches-py", "py"),
        (root, "bin"),
        (root, "py"),
    ]
    for folder, kind in candidates:
        suffix = ".bin" if kind == "bin" else ""
        if any((folder / f"{stem}{suffix}").is_file() for stem in [*_CIFAR_TRAIN, _CIFAR_TEST]):
            return folder, kind
    raise DataError(
        f"cifar10: no CIFAR-10 batches in {root} (expected cifar-10-batches-bin/ or "
        "cifar-10-batches-py/ with data_batch_1..5 and test_batch)"
    )


def load_cifar10(cfg: DataConfig) -> RawData:
    """CIFAR-10, binary (``cifar-10-batches-bin``) or python (``cifar-10-batches-py``) version.

    ``x`` is ``(N, 3, 32, 32)`` in [0, 1]; the python batches go through a restricted
    unpickler that can only rebuild numpy arrays.
    """
    root = _need_path(cfg, "a CIFAR-10 folder")
    if not root.is_dir():
        raise DataError(f"data.path {root} is not a folder (data.name=cifar10 needs one)")
    folder, kind = _cifar_layout(root)
    suffix, reader = (".bin", read_cifar_bin) if kind == "bin" else ("", read_cifar_pickle)

    paths = [folder / f"{stem}{suffix}" for stem in [*_CIFAR_TRAIN, _CIFAR_TEST]]
    for path in paths:  # check all before reading any: a partial copy fails fast
        if not path.is_file():
            raise DataError(f"cifar10: {folder} lacks {path.name}")
    train = [reader(path) for path in paths[:-1]]
    x_test, y_test = reader(paths[-1])
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return RawData(
        _scale_uint8(x_train),
        y_train,
        _scale_uint8(x_test),
        y_test,
        num_classes=10,
        is_image=True,
        source=str(folder),
    )
