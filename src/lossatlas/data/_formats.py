"""Parsers for the standard on-disk formats: IDX (MNIST), CIFAR-10 binary and python, npz.

The formats are simple enough to read with numpy alone, which keeps torchvision optional.
Every parser checks sizes against the header and raises :class:`DataError` naming the file,
so a truncated download is reported as such instead of surfacing as a reshape error.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from lossatlas.errors import DataError

__all__ = [
    "CIFAR_RECORD_BYTES",
    "read_bytes",
    "read_cifar_bin",
    "read_cifar_pickle",
    "read_idx",
    "read_npz",
]

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

CIFAR_SIDE = 32
CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE
CIFAR_RECORD_BYTES = 1 + CIFAR_PIXELS  # one label byte, then 3x32x32 channel-major pixels
CIFAR_CLASSES = 10


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_bytes(path: Path) -> bytes:
    """The file's bytes, transparently gunzipped when its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({_one_line(exc)})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({_one_line(exc)})") from exc


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally ``.gz``) into a native-endian array of its declared shape.

    Header: two zero bytes, a type code, the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes; the data follows with no padding.
    """
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'none'})")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: truncated or corrupt IDX header ({ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file (header shape {shape} needs {expected} "
            f"data bytes, file has {len(data) - header})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a CIFAR-10 binary batch into ``x`` ``(N, 3, 32, 32)`` uint8 and ``y`` ``(N,)``."""
    data = read_bytes(path)
    if not data or len(data) % CIFAR_RECORD_BYTES:
        raise DataError(
            f"{path}: truncated or corrupt CIFAR-10 batch ({len(data)} bytes is not a whole "
            f"number of {CIFAR_RECORD_BYTES}-byte records)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    _check_cifar_labels(labels, path)
    return records[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).copy(), labels


def _check_cifar_labels(labels: np.ndarray, path: Path) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= CIFAR_CLASSES))
    if bad.size:
        raise DataError(
            f"{path}: label {labels[bad[0]]} of record {bad[0]} is not a CIFAR-10 class "
            f"(0..{CIFAR_CLASSES - 1}); is this CIFAR-100 or a corrupt file?"
        )


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    Pickle runs any callable a file names, so an arbitrary pickle can execute code. The
    CIFAR-10 python batches only need the globals below (numpy 1.x files say
    ``numpy.core``, numpy 2.x files ``numpy._core``); every other global is refused.
    ``_codecs.encode`` appears when Python 3 writes ``bytes`` with protocol 2; it only
    converts text to bytes.
    """

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),
        }
    )

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 ``str`` -> ``bytes``
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise DataError(
                f"{self._path}: refusing to unpickle '{module}.{name}' "
                "(only numpy arrays are allowed in a CIFAR-10 python batch)"
            )
        # Resolve numpy.core.* through the current module layout: touching numpy.core on
        # numpy 2 is deprecated, and the objects are the same.
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
            if not hasattr(np, "_core"):  # numpy 1.x
                module = module.replace("numpy._core", "numpy.core")
        elif module.startswith("numpy._core") and not hasattr(np, "_core"):
            module = module.replace("numpy._core", "numpy.core")
        return super().find_class(module, name)


def _get(batch: dict[Any, Any], key: str) -> Any:
    """A batch entry under a ``bytes`` key (the official Python 2 files) or a ``str`` key."""
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def read_cifar_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a CIFAR-10 python batch with a restricted unpickler.

    Returns ``x`` ``(N, 3, 32, 32)`` uint8 and ``y`` ``(N,)`` int64.
    """
    data = read_bytes(path)
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as exc:  # a corrupt pickle can fail in many ways; all mean "corrupt"
        raise DataError(
            f"{path}: corrupt or truncated CIFAR-10 python batch ({_one_line(exc)})"
        ) from exc
    if not isinstance(batch, dict) or _get(batch, "data") is None or _get(batch, "labels") is None:
        raise DataError(f"{path}: not a CIFAR-10 python batch (no 'data' and 'labels' entries)")
    pixels, labels = _get(batch, "data"), _get(batch, "labels")
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.shape[1] != CIFAR_PIXELS:
        shape = getattr(pixels, "shape", type(pixels).__name__)
        raise DataError(f"{path}: 'data' must be an (N, {CIFAR_PIXELS}) array, got {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{path}: 'labels' are not integers ({_one_line(exc)})") from exc
    if labels.shape != (len(pixels),):
        raise DataError(f"{path}: {len(pixels)} images but 'labels' has shape {labels.shape}")
    _check_cifar_labels(labels, path)
    images = pixels.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).astype(np.uint8, copy=True)
    return images, labels


def read_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file (no pickled objects), requiring ``required``."""
    if not path.is_file():
        raise DataError(f"{path}: npz file not found")
    try:
        # Open the file ourselves: np.load leaks its own handle when the zip is corrupt.
        with open(path, "rb") as handle:
            archive = np.load(handle, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{path}: holds a single array, not an npz archive of {', '.join(required)}"
                )
            with archive:
                missing = [key for key in required if key not in archive.files]
                if missing:
                    raise DataError(
                        f"{path}: npz file lacks array '{missing[0]}' "
                        f"(has: {', '.join(archive.files) or 'nothing'})"
                    )
                return {key: archive[key] for key in archive.files}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # allow_pickle=False turns object arrays into a ValueError too: we never unpickle.
        raise DataError(f"{path}: unreadable npz file ({_one_line(exc)})") from exc
