"""Streaming over an ``(S, D)`` matrix that may not fit in memory, and its exact Gram matrix.

The jump-and-retrain study produces ``S`` = 640 parameter vectors of ``D`` ≈ 1.47M floats
(3.8 GB as float32). Every embedding and score here needs only *pairwise* quantities between
the ``S`` samples, and all of them follow exactly from the ``S × S`` Gram matrix ``X Xᵀ``
(3.3 MB for S = 640): Euclidean and cosine distances, the centred Gram whose eigenvectors are
the PCA scores, and projections onto a few given vectors. So the one expensive step is a
streamed pass that builds the Gram matrix, and :func:`streamed_gram` does it within a fixed
memory budget, reading a numpy array, a ``zarr.Array`` or anything with ``.shape``, ``.dtype``
and 2-D slicing.

Why the pass holds a *panel* of rows and not just one chunk: a Gram entry pairs two rows, so
with only one row chunk in memory every chunk would have to be re-read once per other chunk
(``S / chunk_rows`` passes). Instead a panel of as many rows as ``block_memory`` allows is held,
and the later row chunks are streamed past it; with ``P`` panels the data is read about
``(P + 1) / 2`` times. When the array is chunked along ``D`` too, whole column stripes of all
``S`` rows usually fit, and the data is read exactly once.

Numerical care, because parameter vectors sit far from the origin and close to each other:

* Every row is shifted by a reference row ``r`` (the first row) before any product, so the
  stored Gram ``G' = (X - 1rᵀ)(X - 1rᵀ)ᵀ`` has entries of the size of the *spread* of the
  samples, not of their norms. Squared distances ``G'ᵢᵢ + G'ⱼⱼ - 2G'ᵢⱼ`` then lose no digits to
  cancellation, and the raw Gram is recovered exactly as ``G' + s1ᵀ + 1sᵀ + |r|²`` with
  ``s = (X - 1rᵀ) r``.
* Products are accumulated in float64 even for float32 input (D = 1.5M terms per entry).
* Cosine distances use ``(d² - (|xᵢ| - |xⱼ|)²) / (2|xᵢ||xⱼ|)``, which equals ``1 - cos`` but
  does not cancel for nearly parallel vectors.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.linalg.blas import dsyrk

__all__ = [
    "DEFAULT_BLOCK_MEMORY",
    "Gram",
    "Metric",
    "as_source",
    "gram_of",
    "is_out_of_core",
    "iter_rows",
    "read_rows",
    "streamed_gram",
]

# Scratch for float64 copies of column sub-blocks: small enough to stay cache/RAM friendly,
# large enough that each BLAS call has plenty of work.
_SCRATCH_BYTES = 64 * 2**20

Metric = Literal["euclidean", "sqeuclidean", "cosine"]


def as_source(X: Any) -> Any:
    """``X`` as a 2-D readable source: numpy arrays, zarr arrays and the like pass through.

    Torch tensors are detached and copied to numpy (without importing torch here); other
    array-likes go through ``np.asarray``. Anything with ``shape``, ``dtype`` and 2-D slicing
    (``zarr.Array``, ``h5py.Dataset``) is kept as it is, so it is only ever read in blocks.
    """
    if isinstance(X, np.ndarray):
        source = X
    elif hasattr(X, "detach"):
        source = X.detach().cpu().numpy()
    elif hasattr(X, "shape") and hasattr(X, "dtype") and hasattr(X, "__getitem__"):
        source = X
    else:
        source = np.asarray(X)
    if len(source.shape) != 2:
        raise ValueError(f"expected a 2-D (samples, features) array, got shape {source.shape}")
    if np.dtype(source.dtype).kind not in "fiu":
        raise ValueError(f"expected a real numeric array, got dtype {source.dtype}")
    return source


def _work_dtype(source: Any) -> np.dtype:
    # float32 data stays float32 in the held blocks (half the memory); products are float64.
    kind = np.dtype(source.dtype)
    return np.dtype(np.float32) if kind in (np.float16, np.float32) else np.dtype(np.float64)


def _chunk_shape(source: Any, chunk_rows: int) -> tuple[int, int] | None:
    """The storage chunk ``(rows, cols)`` of an out-of-core source, ``None`` if in memory."""
    if isinstance(source, np.ndarray):
        return None
    chunks = getattr(source, "chunks", None)
    n_rows, n_cols = (int(n) for n in source.shape)
    try:
        rows, cols = (int(c) for c in chunks)  # type: ignore[union-attr]
    except (TypeError, ValueError):  # no chunks, or dask-style chunk tuples
        return (max(1, min(chunk_rows, n_rows)), max(1, n_cols))
    return (max(1, min(rows, n_rows)), max(1, min(cols, n_cols)))


def _slices(n: int, step: int, start: int = 0) -> list[slice]:
    step = max(1, int(step))
    return [slice(i, min(i + step, n)) for i in range(start, n, step)]


def read_rows(source: Any, rows: slice, cols: slice = slice(None), dtype: Any = None) -> np.ndarray:
    """Read ``source[rows, cols]`` into a fresh numpy array of ``dtype`` (the work dtype).

    A chunked source is read one storage-chunk row at a time into the result: zarr fetches
    and decodes every chunk of a request before assembling it, so one large request would
    briefly need twice its size.
    """
    dtype = _work_dtype(source) if dtype is None else np.dtype(dtype)
    if isinstance(source, np.ndarray):
        return np.array(source[rows, cols], dtype=dtype)
    start, stop, _ = rows.indices(int(source.shape[0]))
    n_cols = len(range(*cols.indices(int(source.shape[1]))))
    out = np.empty((max(0, stop - start), n_cols), dtype=dtype)
    grid = _chunk_shape(source, stop - start or 1)
    step = grid[0] if grid is not None else max(1, stop - start)
    # Align the pieces to the storage grid so no chunk is decoded twice.
    bounds = [start, *range((start // step + 1) * step, stop, step), stop]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            out[a - start : b - start] = np.asarray(source[a:b, cols])
    return out


def iter_rows(source: Any, chunk_rows: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, block)`` over row chunks, aligned to the storage chunks when there are.

    ``block`` has all ``D`` columns and the work dtype (float32 or float64).
    """
    n_rows = int(source.shape[0])
    grid = _chunk_shape(source, chunk_rows)
    step = chunk_rows if grid is None else grid[0] * max(1, chunk_rows // grid[0])
    for rows in _slices(n_rows, step):
        yield rows, read_rows(source, rows)


@dataclass(frozen=True, eq=False)
class Gram:
    """The exact Gram matrix of ``S`` samples, stored shifted by a reference row (see module).

    Build it with :func:`streamed_gram`. All derived matrices are ``(S, S)`` float64.

    Attributes:
        shifted: ``(S, S)`` ``(X - 1rᵀ)(X - 1rᵀ)ᵀ`` with ``r`` the first row of ``X``.
        ref_dot: ``(S,)`` ``(xᵢ - r)·r``.
        ref_sqnorm: ``|r|²``.
        mean: ``(D,)`` float64 column means of ``X``.
        projections: ``(S, m)`` ``xᵢ·vₖ`` for the extra ``vectors`` given to the pass, or None.
        vectors: the ``(m, D)`` vectors those projections were taken on (kept so a caller can
            check that a Gram was streamed with the vectors it needs), or None.
    """

    shifted: np.ndarray
    ref_dot: np.ndarray
    ref_sqnorm: float
    mean: np.ndarray
    projections: np.ndarray | None = None
    vectors: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        """``S``."""
        return int(self.shifted.shape[0])

    @property
    def n_features(self) -> int:
        """``D``."""
        return int(self.mean.shape[0])

    def raw(self) -> np.ndarray:
        """``X Xᵀ``: ``(S, S)``."""
        s = self.ref_dot
        return self.shifted + s[:, None] + s[None, :] + self.ref_sqnorm

    def centred(self) -> np.ndarray:
        """``Xc Xcᵀ`` with ``Xc = X - 1 meanᵀ``: ``(S, S)``. Shift-invariant, so exact from G'."""
        g = self.shifted
        row = g.mean(axis=1, keepdims=True)
        return g - row - row.T + g.mean()

    def sqeuclidean(self) -> np.ndarray:
        """Squared Euclidean distances ``|xᵢ - xⱼ|²``: ``(S, S)``, zero diagonal."""
        diag = np.diag(self.shifted)
        d2 = diag[:, None] + diag[None, :] - 2.0 * self.shifted
        np.maximum(d2, 0.0, out=d2)
        np.fill_diagonal(d2, 0.0)
        return d2

    def cosine(self, *, center: bool = False) -> np.ndarray:
        """Cosine distances ``1 - cos(xᵢ, xⱼ)`` (of ``xᵢ - mean`` if ``center``): ``(S, S)``.

        Rows of zero norm give NaN, as ``1 - cos`` is undefined there.
        """
        d2 = self.sqeuclidean()
        if center:
            sq = np.diag(self.centred()).copy()
            sq_diff = sq[:, None] - sq[None, :]
        else:
            g_diag = np.diag(self.shifted)
            sq = g_diag + 2.0 * self.ref_dot + self.ref_sqnorm
            # |xᵢ|² - |xⱼ|² from the shifted terms: no cancellation of the large |r|².
            lin = g_diag + 2.0 * self.ref_dot
            sq_diff = lin[:, None] - lin[None, :]
        norms = np.sqrt(np.maximum(sq, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            norm_diff = sq_diff / (norms[:, None] + norms[None, :])
            dist = (d2 - norm_diff**2) / (2.0 * norms[:, None] * norms[None, :])
        dist = np.clip(dist, 0.0, 2.0)
        np.fill_diagonal(dist, np.where(norms > 0, 0.0, np.nan))
        return dist

    def distances(self, metric: Metric = "euclidean", *, center: bool = False) -> np.ndarray:
        """Pairwise distances ``(S, S)`` in ``metric``: euclidean, sqeuclidean or cosine.

        ``center`` only matters for cosine (Euclidean distances do not change under a shift).
        """
        if metric == "euclidean":
            return np.sqrt(self.sqeuclidean())
        if metric == "sqeuclidean":
            return self.sqeuclidean()
        if metric == "cosine":
            return self.cosine(center=center)
        raise ValueError(
            f"metric {metric!r} cannot be derived from a Gram matrix; "
            "use 'euclidean', 'sqeuclidean' or 'cosine'"
        )


def _plan(
    shape: tuple[int, int],
    grid: tuple[int, int] | None,
    itemsize: int,
    chunk_rows: int,
    block_memory: int,
) -> tuple[list[slice], int, int]:
    """Column blocks, rows held per panel, and rows per streamed read (see module docstring)."""
    n_rows, n_cols = shape
    if grid is None:
        # In memory: nothing to read, only the float64 copy of a stripe of all rows to bound.
        width = max(1, min(n_cols, block_memory // (n_rows * 8)))
        return _slices(n_cols, width), n_rows, n_rows
    chunk_r, chunk_c = grid
    stream = chunk_r * max(1, chunk_rows // chunk_r)
    stripe = n_rows * chunk_c * itemsize
    if stripe <= block_memory:
        # Whole column stripes of every row fit: a single pass, each value read once.
        width = min(n_cols, chunk_c * max(1, block_memory // stripe))
        return _slices(n_cols, width), n_rows, stream
    # Never split a storage chunk across column blocks: that would decode it twice.
    panel = block_memory // (chunk_c * itemsize)
    panel = max(chunk_r, (panel // chunk_r) * chunk_r)
    return _slices(n_cols, chunk_c), min(panel, n_rows), stream


def _f64(block: np.ndarray) -> np.ndarray:
    return block.astype(np.float64, copy=False)


def streamed_gram(
    X: Any,
    *,
    vectors: Any = None,
    chunk_rows: int = 32,
    block_memory: int = 512 * 2**20,
) -> Gram:
    """Exact Gram matrix of the rows of ``X`` in one blocked, streamed pass (see module).

    Args:
        X: ``(S, D)`` numpy array, zarr array or anything with 2-D slicing; read in blocks.
        vectors: optional ``(m, D)`` vectors to project every row onto in the same pass
            (e.g. the two directions of a random plane); in memory.
        chunk_rows: rows per streamed read, rounded to whole storage chunks of ``X``.
        block_memory: bytes of ``X`` held at once (the panel); the peak is about this plus one
            streamed read, the ``(S, S)`` result and 64 MiB of float64 scratch.

    Returns:
        A :class:`Gram` with the shifted Gram, the column means and the projections.
    """
    source = as_source(X)
    n_rows, n_cols = (int(n) for n in source.shape)
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"X must have at least one row and one column, got {(n_rows, n_cols)}")
    if chunk_rows < 1 or block_memory < 1:
        raise ValueError("chunk_rows and block_memory must be positive")
    dtype = _work_dtype(source)
    vecs = None
    if vectors is not None:
        vecs = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        if vecs.ndim != 2 or vecs.shape[1] != n_cols:
            raise ValueError(f"vectors must have shape (m, {n_cols}), got {vecs.shape}")
    grid = _chunk_shape(source, chunk_rows)
    col_blocks, panel_rows, stream_rows = _plan(
        (n_rows, n_cols), grid, dtype.itemsize, chunk_rows, block_memory
    )

    ref = read_rows(source, slice(0, 1))[0]
    ref64 = _f64(ref)
    gram = np.zeros((n_rows, n_rows))
    ref_dot = np.zeros(n_rows)
    colsum = np.zeros(n_cols)
    proj = np.zeros((n_rows, 0 if vecs is None else vecs.shape[0]))

    for cols in col_blocks:
        ref_c = ref[cols]
        width = cols.stop - cols.start
        for panel in _slices(n_rows, panel_rows):
            held = read_rows(source, panel, cols, dtype)
            held -= ref_c
            sub = max(1, _SCRATCH_BYTES // (8 * (held.shape[0] + stream_rows)))
            diag = np.zeros((held.shape[0], held.shape[0]))
            for part in _slices(width, sub):
                a = _f64(held[:, part])
                lo, hi = cols.start + part.start, cols.start + part.stop
                colsum[lo:hi] += a.sum(axis=0)
                ref_dot[panel] += a @ ref64[lo:hi]
                if vecs is not None:
                    proj[panel] += a @ vecs[:, lo:hi].T
                # a.T is Fortran-ordered, so syrk reads it without a copy (half the flops of
                # a @ a.T); it fills the upper triangle only.
                diag += dsyrk(1.0, np.asfortranarray(a.T), trans=1)
            upper = np.triu(diag)
            gram[panel, panel] += upper + np.triu(upper, 1).T
            for rows in _slices(n_rows, stream_rows, start=panel.stop):
                streamed = read_rows(source, rows, cols, dtype)
                streamed -= ref_c
                block = np.zeros((held.shape[0], streamed.shape[0]))
                for part in _slices(width, sub):
                    block += _f64(held[:, part]) @ _f64(streamed[:, part]).T
                gram[panel, rows] += block
                gram[rows, panel] += block.T
                del streamed
            del held

    if not np.isfinite(gram).all():
        raise ValueError("X contains NaN or infinity")
    projections = None
    if vecs is not None:
        # xᵢ·v = (xᵢ - r)·v + r·v
        projections = proj + (vecs @ ref64)[None, :]
    return Gram(
        shifted=gram,
        ref_dot=ref_dot,
        ref_sqnorm=float(ref64 @ ref64),
        mean=ref64 + colsum / n_rows,
        projections=projections,
        vectors=vecs,
    )


DEFAULT_BLOCK_MEMORY = 512 * 2**20


def is_out_of_core(X: Any) -> bool:
    """Whether ``X`` is a chunked on-disk array (zarr, h5py) to be read in blocks only."""
    return (
        not isinstance(X, np.ndarray)
        and not sparse.issparse(X)
        and hasattr(X, "chunks")
        and hasattr(X, "shape")
        and hasattr(X, "dtype")
        and len(X.shape) == 2
    )


def gram_of(X: Any, chunk_rows: int, block_memory: int, vectors: Any = None) -> tuple[Gram, Any]:
    """The Gram of ``X`` (reused if ``X`` is one) and the source it was read from (or None)."""
    if isinstance(X, Gram):
        return X, None
    source = as_source(X)
    return streamed_gram(
        source, vectors=vectors, chunk_rows=chunk_rows, block_memory=block_memory
    ), source
