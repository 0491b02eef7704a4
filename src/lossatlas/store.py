"""The atlas store: the zarr v3 hierarchy that is the contract between stages.

Layout of ``OUT/atlas.zarr``::

    zarr.json                    root attrs: {"lossatlas": versions, "config": ..., "fingerprint"}
    <study>/                     one group per study/probe (nested names such as "train/run0")
        zarr.json                group attrs: fingerprint, seeds, timings, units_total, ...
        <array>/                 chunked arrays; a trajectory never has to fit in memory
        _units/<unit_id>/        one marker per completed unit of work

A unit of work is complete exactly when its marker exists and parses: the marker is a tiny zarr
group whose ``zarr.json`` attributes hold ``"complete": true``. Callers write a unit's data first
and its marker last, so a killed run never leaves a unit that looks done but is not.

Every read and write goes through zarr's store API rather than raw file IO: ``LocalStore`` for a
folder (NFS included), ``FsspecStore`` for an fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``file:///shared/run``, ``memory://run`` in tests). Many workers can write one store at once:
each writes its own chunks and its own marker, and no two workers share a file. For a URL,
``out_dir`` and ``path`` stay URL strings (see :mod:`lossatlas.location`), so
``AtlasStore.open(str(store.out_dir), create=False)`` in a worker reopens the same store.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.errors import ContainsGroupError

from lossatlas.backends import FolderStore, URLStore
from lossatlas.chunks import COMPRESSORS, ChunkDamage, checksum_ok, chunk_coords, has_checksum
from lossatlas.errors import StoreError
from lossatlas.faults import faults_as_store_errors
from lossatlas.listing import NodeInfo, describe_nodes, rich_tree, short_json
from lossatlas.location import (
    Location,
    as_location,
    describe_error,
    is_url,
    join_location,
    storage_options,
    url_filesystem,
)
from lossatlas.provenance import Marker, chunk_box, current_log, owners, seal, sealed_ok

__all__ = ["AtlasStore", "CheckedArray"]

STORE_NAME = "atlas.zarr"
# Held while a driver rewrites a node's attributes (see AtlasStore._attrs_lock).
ATTRS_LOCK_NAME = ".lossatlas.attrs.lock"
_META = "zarr.json"
_UNITS = "_units"
# Unit ids become zarr node names: no "/", no leading "." or "__" (reserved by the zarr spec).
_UNIT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_BYTES_CHUNK = 1 << 22  # figures are small; 4 MiB chunks keep even big HTML in a few objects
# What zarr's codecs raise on a damaged chunk (crc32c: ValueError; zstd/blosc: RuntimeError).
_DECODE_ERRORS = (ValueError, RuntimeError)

Region = tuple[slice | int, ...] | slice | int | None


# --------------------------------------------------------------------------- JSON helpers


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays, paths and sets JSON-serialisable for attrs."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"value of type {type(value).__name__} cannot be stored in attrs")


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so that comparisons see exactly what the store records."""
    return json.loads(json.dumps(value, default=_json_default))


def _first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    """Describe the first differing dotted key of two JSON trees, or ``None`` if equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                return f"{where} is new"
            if key not in new:
                return f"{where} is missing"
            found = _first_difference(old[key], new[key], where)
            if found:
                return found
        return None
    if old == new:
        return None
    return f"{prefix or 'value'} was {short_json(old)}, now {short_json(new)}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _package_version(name: str) -> str:
    # Read from package metadata so that recording torch's version never imports torch.
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _versions() -> dict[str, str]:
    return {
        "version": _package_version("lossatlas"),
        "created": _now(),
        "torch": _package_version("torch"),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- names


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _check_name(name: str) -> str:
    """Normalise a node path ("a/b") and reject names zarr or the unit markers reserve."""
    clean = _join(name)
    for part in clean.split("/") if clean else []:
        if part in {".", ".."} or part.startswith("__") or part == _UNITS:
            raise StoreError(f"invalid store name '{name}': '{part}' is reserved")
    return clean


def _ancestors_and_self(name: str) -> list[str]:
    """``"a/b"`` -> ``["a/b", "a", ""]``: the node and the groups above it, deepest first."""
    parts = name.split("/") if name else []
    return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _check_unit_id(unit_id: str) -> str:
    if not _UNIT_ID.match(unit_id) or unit_id.startswith("__"):
        raise StoreError(
            f"invalid unit id '{unit_id}': use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return unit_id


def _default_fill(dtype: np.dtype) -> Any:
    if dtype.kind in "fc":
        return math.nan
    if dtype.kind == "b":
        return False
    return 0


def _to_numpy(data: Any) -> np.ndarray:
    """Accept numpy arrays, scalars and torch tensors (moved to CPU) without importing torch."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(data, torch.Tensor):
        tensor = data.detach().cpu()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(data)


def _index(region: Region) -> Any:
    if region is None:
        return Ellipsis
    return region


# --------------------------------------------------------------------------- chunk checks


class CheckedArray(zarr.Array):
    """A ``zarr.Array`` of an atlas store whose reads and writes guard the store's invariants.

    Reading a damaged chunk raises :class:`StoreError` naming the array, the chunk and the unit
    that wrote it; writes are logged for the unit running them (:mod:`lossatlas.provenance`),
    and storage faults become one-line :class:`~lossatlas.faults.StoreFault` s.
    """

    def __init__(self, array: zarr.Array, atlas: AtlasStore, name: str) -> None:
        super().__init__(array.async_array)
        self._atlas = atlas
        self._name = name

    def __getitem__(self, selection: Any) -> Any:
        with self._atlas._reading(self._name):
            return super().__getitem__(selection)

    def __setitem__(self, selection: Any, value: Any) -> None:
        self._atlas._log_chunks(self._name, selection, self.shape, self.chunks)
        with self._atlas._reading(self._name), self._atlas._io("write array", self._name):
            super().__setitem__(selection, value)


# --------------------------------------------------------------------------- the store


class AtlasStore:
    """A lossatlas zarr v3 store at ``OUT/atlas.zarr``; see the module docstring for layout.

    Use :meth:`open` rather than the constructor. Node names are ``/``-separated paths relative
    to the root (``""`` is the root itself). ``out_dir`` and ``path`` are ``Path`` objects for a
    folder and URL strings for a URL; ``str(out_dir)`` reopens the store in any process.
    """

    def __init__(self, out_dir: Location, zstore: Store, *, read_only: bool) -> None:
        self.out_dir: Location = out_dir
        self.path: Location = join_location(out_dir, STORE_NAME)
        self.read_only = read_only
        self._store = zstore

    def __repr__(self) -> str:
        return f"AtlasStore({str(self.path)!r})"

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        out_dir: str | Path,
        *,
        config: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
        create: bool = True,
        read_only: bool = False,
    ) -> AtlasStore:
        """Open ``out_dir/atlas.zarr``, creating it when missing and ``create`` is true.

        ``config`` (``Config.model_dump(mode="json")``) is recorded on creation. When the store
        already exists, ``fingerprint`` (the part of the config that must match; the caller
        decides) is compared with the recorded one; without a fingerprint the whole ``config``
        is compared. A mismatch raises :class:`StoreError`, and nothing is written.
        ``read_only`` opens an existing store for reading only (``lossatlas show``).

        ``out_dir`` is a folder or an fsspec URL (``s3://bucket/prefix``, ``file:///shared/x``);
        pass URLs as ``str``, never through ``Path``. Unknown protocols, missing backend
        packages, missing credentials and unreachable storage raise a one-line
        :class:`StoreError`.
        """
        location = as_location(out_dir)
        if is_url(location):
            return cls._open_url(
                str(location),
                config=config,
                fingerprint=fingerprint,
                create=create,
                read_only=read_only,
            )
        out = Path(location)
        path = out / STORE_NAME
        _check_location(out, path)
        exists = path.is_dir() and (path / _META).exists()
        if not exists:
            if read_only or not create:
                raise StoreError(f"no atlas store in {out} (expected {path})")
            return cls._create(out, config, fingerprint)
        if not read_only:
            _check_writable(path, out)
        store = cls(out, FolderStore(path, read_only=read_only), read_only=read_only)
        store._check_root(config, fingerprint)
        return store

    @classmethod
    def _create(
        cls, out: Path, config: dict[str, Any] | None, fingerprint: dict[str, Any] | None
    ) -> AtlasStore:
        path = out / STORE_NAME
        if path.is_dir() and any(path.iterdir()):
            # Never adopt (and later overwrite) a folder we did not make.
            raise StoreError(f"{path} exists but is not a zarr store; use a new --out")
        _check_writable(out, out)
        with faults_as_store_errors("create the store folder", path):
            path.mkdir(parents=True, exist_ok=True)
        store = cls(out, FolderStore(path), read_only=False)
        store._write_root(config, fingerprint)
        return store

    def _write_root(
        self, config: dict[str, Any] | None, fingerprint: dict[str, Any] | None
    ) -> None:
        """Write the root group document of a new store: versions, config and fingerprint."""
        attrs: dict[str, Any] = {"lossatlas": _versions(), "config": _jsonable(config)}
        if fingerprint is not None:
            attrs["fingerprint"] = _jsonable(fingerprint)
        with self._io("create the store", ""):
            zarr.create_group(self._store, attributes=attrs)

    @classmethod
    def _open_url(
        cls,
        url: str,
        *,
        config: dict[str, Any] | None,
        fingerprint: dict[str, Any] | None,
        create: bool,
        read_only: bool,
    ) -> AtlasStore:
        """:meth:`open` for an fsspec URL: the same checks, through the URL's filesystem.

        Unlike a folder, a URL cannot be checked for writability without writing, so a store
        that is readable but not writable fails at its first write instead of here.
        """
        store_url = str(join_location(url, STORE_NAME))
        fs, out_path = url_filesystem(url)
        store_path = f"{out_path.rstrip('/')}/{STORE_NAME}"
        # The first contact doubles as the reachability check: reading the root document
        # surfaces missing credentials or an unreachable host as its own error, where
        # exists()/isfile() would swallow them and report "no store" instead.
        try:
            try:
                fs.cat_file(f"{store_path}/{_META}")
                exists = True
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                exists = False
            if not exists:
                if fs.isfile(out_path):
                    raise StoreError(f"--out {url} is a file, not a folder")
                if fs.isfile(store_path):
                    raise StoreError(
                        f"{store_url} is a file, not a zarr store folder; use a new --out"
                    )
            # Never adopt (and later overwrite) a folder we did not make.
            foreign = not exists and fs.isdir(store_path) and bool(fs.ls(store_path))
        except StoreError:
            raise
        except Exception as exc:
            # Backends raise their own types (botocore's NoCredentialsError, aiohttp's
            # ClientConnectorError, PermissionError, ...): all mean "cannot use this --out".
            raise StoreError(f"cannot reach {url}: {describe_error(exc)}") from exc
        if not exists and (read_only or not create):
            raise StoreError(f"no atlas store in {url} (expected {store_url})")
        if foreign:
            raise StoreError(f"{store_url} exists but is not a zarr store; use a new --out")
        try:
            zstore = URLStore.from_url(
                store_url, storage_options=storage_options(url), read_only=read_only
            )
        except Exception as exc:
            raise StoreError(f"cannot open {store_url}: {describe_error(exc)}") from exc
        store = cls(url, zstore, read_only=read_only)
        try:
            if exists:
                store._check_root(config, fingerprint)
            else:
                store._write_root(config, fingerprint)
        except StoreError:
            raise
        except Exception as exc:
            verb = "read" if exists else "create"
            raise StoreError(f"cannot {verb} {store_url}: {describe_error(exc)}") from exc
        return store

    def _check_root(
        self, config: dict[str, Any] | None, fingerprint: dict[str, Any] | None
    ) -> None:
        """Validate the root metadata and that this store was made for the same settings."""
        try:
            meta = self._read_meta("")
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if (
            meta is None
            or meta.get("zarr_format") != 3
            or meta.get("node_type") != "group"
            or not isinstance(meta.get("attributes"), dict)
        ):
            raise StoreError(
                f"{self.path} is corrupt: root zarr.json is unreadable; use a new --out"
            )
        attrs = meta["attributes"]
        if "lossatlas" not in attrs:
            raise StoreError(f"{self.path} is a zarr store not made by lossatlas; use a new --out")
        if fingerprint is not None:
            recorded = attrs.get("fingerprint")
            if recorded is None:
                # Made before any stage cared about a fingerprint: the first one claims it.
                if not self.read_only:
                    self._set_attrs("", {"fingerprint": _jsonable(fingerprint)})
                return
            self._compare(recorded, fingerprint, f"{self.path}")
        elif config is not None and attrs.get("config") is not None:
            self._compare(attrs["config"], config, f"{self.path}")

    def _compare(self, recorded: Any, wanted: Any, where: str) -> None:
        diff = _first_difference(recorded, _jsonable(wanted))
        if diff is not None:
            raise StoreError(
                f"{where} holds a different config ({diff}); use a new --out or the same settings"
            )

    # ------------------------------------------------------------------ raw store access

    def _get_bytes(self, key: str) -> bytes | None:
        with self._io("read", key):
            buffer = sync(self._store.get(key, prototype=default_buffer_prototype()))
        return None if buffer is None else buffer.to_bytes()

    def _set_bytes(self, key: str, data: bytes) -> None:
        # Every backend writes a key whole (lossatlas.backends): a temp file renamed into place
        # for folders and file:// URLs, one upload on object stores, write-then-swap elsewhere.
        # Readers of markers and metadata still treat an unparseable document as absent.
        with self._io("write", key):
            sync(self._store.set(key, default_buffer_prototype().buffer.from_bytes(data)))

    def raw_keys(self, prefix: str = "") -> list[str]:
        """Every key of the store under ``prefix`` (``"train/params/"``), for ``verify``."""

        async def collect(items: AsyncIterator[str]) -> list[str]:
            return [item async for item in items]

        with self._io("list", prefix):
            return sorted(sync(collect(self._store.list_prefix(prefix))))

    def raw_get(self, key: str) -> bytes | None:
        """The stored bytes of ``key`` (None when absent): what ``verify`` checks."""
        return self._get_bytes(key)

    def raw_set(self, key: str, data: bytes) -> None:
        """Write ``key`` whole (``verify --repair`` rewriting a damaged group document)."""
        self._writable()
        self._set_bytes(key, data)

    def raw_delete(self, key: str) -> None:
        """Delete ``key`` (``verify --repair`` removing a damaged chunk or marker)."""
        self._writable()
        with self._io("delete", key):
            sync(self._store.delete(key))

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only")

    @contextlib.contextmanager
    def _io(self, operation: str, name: str) -> Iterator[None]:
        """Storage faults inside the block become one line naming ``name`` and how to resume."""
        with faults_as_store_errors(
            operation, join_location(self.path, name) if name else self.path
        ):
            yield

    def _list_dir(self, prefix: str) -> list[str]:
        async def collect(items: AsyncIterator[str]) -> list[str]:
            return [item async for item in items]

        with self._io("list", prefix):
            return sync(collect(self._store.list_dir(prefix)))

    def _read_meta(self, name: str) -> dict[str, Any] | None:
        """The parsed ``zarr.json`` of a node, or ``None`` if missing or unparseable."""
        raw = self._get_bytes(_join(name, _META))
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        return meta if isinstance(meta, dict) else None

    def _kind(self, name: str) -> str | None:
        meta = self._read_meta(name)
        return None if meta is None else meta.get("node_type")

    @property
    def _mode(self) -> Literal["r", "r+"]:
        return "r" if self.read_only else "r+"

    # ------------------------------------------------------------------ groups

    def has(self, name: str) -> bool:
        """Whether a group or array exists at ``name``."""
        return self._kind(_check_name(name)) is not None

    def group(self, name: str) -> zarr.Group:
        """The existing group ``name``; :class:`StoreError` if there is none."""
        name = _check_name(name)
        if self._kind(name) != "group":
            raise StoreError(f"no group '{name}' in {self.path}")
        return zarr.open_group(self._store, path=name, mode=self._mode)

    def ensure_group(
        self,
        name: str,
        *,
        attrs: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
        units: bool = True,
    ) -> zarr.Group:
        """Create group ``name`` (parents too) or reopen it for resuming.

        If it exists and was made with a different ``fingerprint``, raise :class:`StoreError`
        before writing anything; otherwise merge ``attrs`` into its attributes. ``units``
        also creates its ``_units`` marker group (not wanted for a group that only holds one
        unit's output).
        """
        name = _check_name(name)
        kind = self._kind(name)
        if kind == "array":
            raise StoreError(f"'{name}' in {self.path} is an array, not a group")
        if kind is None:
            initial = dict(_jsonable(attrs or {}))
            if fingerprint is not None:
                initial["fingerprint"] = _jsonable(fingerprint)
            self._log_document(name)
            with self._io("create group", name):
                group = zarr.create_group(self._store, path=name, attributes=initial)
        else:
            current = self.attrs(name)
            updates = dict(_jsonable(attrs or {}))
            if fingerprint is not None:
                if "fingerprint" in current:
                    self._compare(
                        current["fingerprint"], fingerprint, f"group '{name}' in {self.path}"
                    )
                updates["fingerprint"] = _jsonable(fingerprint)
            if any(current.get(k) != v for k, v in updates.items()):
                self._set_attrs(name, updates)
            group = zarr.open_group(self._store, path=name, mode="r+")
        if units:
            self._ensure_units_group(name)
        return group

    def _ensure_units_group(self, group: str) -> None:
        # Created up front by the driver so that workers marking units never race to make it.
        units = _join(group, _UNITS)
        if self._kind(units) is None:
            # Another process may make it between our check and our write; that is fine.
            with contextlib.suppress(ContainsGroupError), self._io("create group", units):
                zarr.open_group(self._store, path=units, mode="a")

    # ------------------------------------------------------------------ arrays

    def create_array(
        self,
        name: str,
        shape: tuple[int, ...] | int,
        dtype: Any,
        chunks: tuple[int, ...] | int,
        *,
        fill_value: Any = None,
        attrs: dict[str, Any] | None = None,
    ) -> zarr.Array:
        """Create a chunked array, or return the existing one if it has this layout (resume).

        ``fill_value`` defaults to NaN for floats, 0 for integers and False for booleans, so an
        unwritten float region reads as NaN. A layout mismatch raises :class:`StoreError`.
        """
        name = _check_name(name)
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        chunks = (chunks,) if isinstance(chunks, int) else tuple(int(c) for c in chunks)
        dtype = np.dtype(dtype)
        kind = self._kind(name)
        if kind == "group":
            raise StoreError(f"'{name}' in {self.path} is a group, not an array")
        if kind == "array":
            existing = zarr.open_array(self._store, path=name, mode="r+")
            found = (tuple(existing.shape), np.dtype(existing.dtype), tuple(existing.chunks))
            if found != (shape, dtype, chunks):
                raise StoreError(
                    f"array '{name}' in {self.path} has shape {found[0]}, dtype {found[1]}, "
                    f"chunks {found[2]}, not {shape}, {dtype}, {chunks}; use a new --out"
                )
            return CheckedArray(existing, self, name)
        self._log_document(name)
        with self._io("create array", name):
            created = zarr.create_array(
                self._store,
                name=name,
                shape=shape,
                dtype=dtype,
                chunks=chunks,
                fill_value=_default_fill(dtype) if fill_value is None else fill_value,
                compressors=COMPRESSORS,
                attributes=_jsonable(attrs or {}),
            )
        return CheckedArray(created, self, name)

    def array(self, name: str) -> CheckedArray:
        """The existing array ``name``; :class:`StoreError` if there is none.

        Indexing it reads and writes like a ``zarr.Array``; a damaged chunk raises
        :class:`StoreError` naming the array, the chunk and the unit that wrote it.
        """
        name = _check_name(name)
        if self._kind(name) != "array":
            raise StoreError(f"no array '{name}' in {self.path}")
        return CheckedArray(zarr.open_array(self._store, path=name, mode=self._mode), self, name)

    def write(self, name: str, region: Region, data: Any) -> None:
        """Write ``data`` (numpy or torch, any device) into ``region`` of array ``name``.

        ``region`` is a tuple of slices/ints, or ``None`` for the whole array. Chunks fully
        covered by the region are written without being read first; a partly covered chunk is
        read, modified and rewritten, so concurrent units must own whole chunks.
        """
        self.array(name)[_index(region)] = _to_numpy(data)

    def read(self, name: str, region: Region = None) -> np.ndarray:
        """Read ``region`` (default: all) of array ``name`` as a numpy array."""
        return np.asarray(self.array(name)[_index(region)])

    # ------------------------------------------------------------------ damage and provenance

    def damaged_chunks(self, name: str) -> list[ChunkDamage]:
        """The chunks of array ``name`` whose stored bytes fail their checksum.

        Arrays written before checksums (no ``crc32c`` codec) are checked by decoding each
        chunk instead, which catches broken compressed frames but not every flipped byte.
        """
        name = _check_name(name)
        meta = self._read_meta(name)
        if meta is None or meta.get("node_type") != "array":
            return []
        checked = has_checksum(meta)
        decoder = None if checked else zarr.open_array(self._store, path=name, mode="r")
        damage = []
        prefix = f"{name}/" if name else ""
        for key in self.raw_keys(prefix):
            coords = chunk_coords(meta, key[len(prefix) :])
            if coords is None:
                continue
            if checked:
                raw = self._get_bytes(key)
                if raw is not None and not checksum_ok(raw):
                    damage.append(ChunkDamage(name, key, coords, "fails its checksum"))
                continue
            try:
                decoder.get_block_selection(coords)  # type: ignore[union-attr]
            except Exception as exc:
                damage.append(ChunkDamage(name, key, coords, f"cannot be decoded ({exc})"))
        return damage

    def markers(self, groups: list[str] | None = None) -> list[Marker]:
        """The complete markers of ``groups`` (default: every unit group of the store)."""
        if groups is None:
            groups = self.unit_groups()
        found = []
        for group in groups:
            for unit in self.completed_units(group):
                info = self.unit_info(group, unit)
                if info is not None:
                    found.append(Marker(group, unit, info))
        return found

    def unit_groups(self) -> list[str]:
        """Every group of the store that has a ``_units`` folder of markers."""
        suffix = f"/{_UNITS}/{_META}"
        groups = set()
        for key in self.raw_keys():
            if key == f"{_UNITS}/{_META}":
                groups.add("")
            elif key.endswith(suffix) and f"/{_UNITS}/" not in key[: -len(suffix)] + "/":
                groups.add(key[: -len(suffix)])
        return sorted(groups)

    def writers(self, name: str, chunk: tuple[int, ...] | None = None) -> set[tuple[str, str]]:
        """``(group, unit)`` of the units that wrote chunk ``chunk`` of ``name`` (or its doc)."""
        above = [g for g in _ancestors_and_self(name) if self._kind(_join(g, _UNITS)) is not None]
        return owners(name, self.markers(above), chunk=chunk, unit_groups=above)

    @contextlib.contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        """A read of ``name`` that fails on a damaged chunk says which chunk and which unit."""
        try:
            yield
        except _DECODE_ERRORS as exc:
            damage = self.damaged_chunks(name)
            if not damage:
                raise
            first = damage[0]
            units = sorted(self.writers(name, first.coords))
            who = (
                ", ".join(f"unit '{u}' of '{g or '/'}'" for g, u in units)
                if units
                else "no unit on record"
            )
            more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
            raise StoreError(
                f"array '{name}' in {self.path} is damaged: chunk {first.key}{more} "
                f"{first.problem} (written by {who}); run `lossatlas verify {self.out_dir} "
                "--repair`, then re-run the same command to recompute it"
            ) from exc

    def _log_chunks(self, name: str, region: Any, shape: Any, chunks: Any) -> None:
        log = current_log()
        if log is not None:
            log.add_chunks(name, chunk_box(region, shape, chunks))

    def _log_document(self, name: str) -> None:
        log = current_log()
        if log is not None:
            log.documents.add(name)

    # ------------------------------------------------------------------ attrs and timings

    def attrs(self, name: str = "") -> dict[str, Any]:
        """A fresh copy of the attributes of group or array ``name`` (root by default)."""
        name = _check_name(name)
        meta = self._read_meta(name)
        if meta is None:
            raise StoreError(f"no group or array '{name}' in {self.path}")
        return dict(meta.get("attributes") or {})

    def update_attrs(self, name: str, values: dict[str, Any]) -> None:
        """Merge ``values`` into the attributes of ``name`` (one metadata write)."""
        name = _check_name(name)
        if self._kind(name) is None:
            raise StoreError(f"no group or array '{name}' in {self.path}")
        self._set_attrs(name, _jsonable(values))

    def _set_attrs(self, name: str, values: dict[str, Any]) -> None:
        # Attribute updates read, merge and rewrite the node's zarr.json. Workers never do this;
        # drivers do, and two of them share a folder store when the studies run side by side
        # (`lossatlas run` with the process pool), both adding their claims to one group: an
        # flock makes each read-merge-write whole, so neither loses the other's keys.
        self._log_document(name)
        with self._io("update the attributes of", name), self._attrs_lock():
            if self._kind(name) == "array":
                node: zarr.Array | zarr.Group = zarr.open_array(self._store, path=name, mode="r+")
            else:
                node = zarr.open_group(self._store, path=name, mode="r+")
            node.attrs.update(values)

    @contextlib.contextmanager
    def _attrs_lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on ``OUT/.lossatlas.attrs.lock`` (folder stores; elsewhere
        none: only one driver writes a URL store)."""
        if self.read_only or is_url(self.out_dir):
            yield
            return
        import fcntl

        with open(Path(self.out_dir) / ATTRS_LOCK_NAME, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record_timing(
        self, group: str, stage: str, seconds: float, *, accumulate: bool = False
    ) -> None:
        """Record the wall time of ``stage`` in ``group``'s ``timings`` attribute.

        ``accumulate`` adds to the recorded time instead, so a resumed stage reports the total
        time spent on it across runs.
        """
        timings = self.timings(group)
        previous = float(timings.get(stage, 0.0)) if accumulate else 0.0
        timings[stage] = round(previous + float(seconds), 3)
        self.update_attrs(group, {"timings": timings})

    def timings(self, group: str = "") -> dict[str, float]:
        """Stage name -> seconds recorded in ``group``."""
        return dict(self.attrs(group).get("timings") or {})

    # ------------------------------------------------------------------ unit markers

    def _marker_key(self, group: str, unit_id: str) -> str:
        return _join(_check_name(group), _UNITS, _check_unit_id(unit_id), _META)

    def mark_done(self, group: str, unit_id: str, info: dict[str, Any] | None = None) -> None:
        """Write the completion marker of ``unit_id``; call it only after all its data is written.

        The marker is a zarr group document written in one ``store.set``: on ``LocalStore`` that
        is a temp file renamed into place and on an object store one PUT, so it is either absent
        or whole. Readers also require it to parse and say ``complete: true``, so even a torn
        write (possible through fsspec's ``file://``) reads as "not done".
        """
        key = self._marker_key(group, unit_id)
        self._ensure_units_group(_check_name(group))
        attributes = {**_jsonable(info or {}), "unit": unit_id, "finished": _now()}
        attributes["complete"] = True
        # Sealed with a CRC-32C of its attributes: a marker changed on disk reads as not done.
        document = {"zarr_format": 3, "node_type": "group", "attributes": seal(attributes)}
        self._set_bytes(key, json.dumps(document).encode())

    def unit_info(self, group: str, unit_id: str) -> dict[str, Any] | None:
        """The marker's attributes if ``unit_id`` is complete, else ``None``."""
        raw = self._get_bytes(self._marker_key(group, unit_id))
        if raw is None:
            return None
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None  # a torn marker: the unit will simply be run again
        attributes = document.get("attributes") if isinstance(document, dict) else None
        if not isinstance(attributes, dict) or attributes.get("complete") is not True:
            return None
        if not sealed_ok(attributes):
            return None  # damaged since it was written: the unit will be run again
        return attributes

    def unit_done(self, group: str, unit_id: str) -> bool:
        """Whether ``unit_id`` of ``group`` has a complete marker."""
        return self.unit_info(group, unit_id) is not None

    def completed_units(self, group: str) -> list[str]:
        """Sorted ids of the units of ``group`` whose markers are complete."""
        prefix = _join(_check_name(group), _UNITS)
        candidates = [c for c in self._list_dir(prefix) if _UNIT_ID.match(c)]
        return sorted(c for c in candidates if self.unit_done(group, c))

    # ------------------------------------------------------------------ binary blobs

    def save_bytes(self, name: str, data: bytes, media_type: str) -> None:
        """Store a figure or report (PNG, HTML, ...) as a uint8 array, replacing any old one."""
        name = _check_name(name)
        if self._kind(name) == "group":
            raise StoreError(f"'{name}' in {self.path} is a group, not a blob")
        buffer = np.frombuffer(bytes(data), dtype=np.uint8)
        self._log_document(name)
        with self._io("save", name):
            array = zarr.create_array(
                self._store,
                name=name,
                shape=buffer.shape,
                dtype=np.uint8,
                chunks=(max(1, min(buffer.size, _BYTES_CHUNK)),),
                fill_value=0,
                compressors=COMPRESSORS,
                attributes={"media_type": media_type, "nbytes": int(buffer.size)},
                overwrite=True,
            )
        if buffer.size:
            CheckedArray(array, self, name)[...] = buffer

    def load_bytes(self, name: str) -> bytes:
        """The bytes stored by :meth:`save_bytes` (its media type is in ``attrs(name)``)."""
        array = self.array(name)
        if "media_type" not in array.attrs:
            raise StoreError(f"'{name}' in {self.path} is an array, not a saved blob")
        return np.asarray(array[...], dtype=np.uint8).tobytes()

    # ------------------------------------------------------------------ listing

    def _walk(self, name: str = "") -> Iterator[NodeInfo]:
        """Depth-first nodes, read from raw metadata so stray or torn files never break it."""
        meta = self._read_meta(name)
        if meta is None:
            return
        attrs = dict(meta.get("attributes") or {})
        if meta.get("node_type") == "array":
            grid = (meta.get("chunk_grid") or {}).get("configuration") or {}
            yield NodeInfo(
                path=name,
                kind="array",
                attrs=attrs,
                shape=tuple(meta.get("shape") or ()),
                dtype=str(meta.get("data_type")),
                chunks=tuple(grid.get("chunk_shape") or ()),
            )
            return
        children = sorted(c for c in self._list_dir(name) if c != _META)
        units_done = len(self.completed_units(name)) if _UNITS in children else None
        yield NodeInfo(path=name, kind="group", attrs=attrs, units_done=units_done)
        for child in children:
            if child != _UNITS:
                yield from self._walk(_join(name, child))

    def tree(self) -> list[tuple[str, str]]:
        """``(path, summary)`` for every group and array; the root's path is ``""``."""
        return [(node.path, node.summary()) for node in self._walk()]

    def describe(self) -> str:
        """A plain-text listing for ``lossatlas show``: one indented line per node."""
        return describe_nodes(str(self.path), list(self._walk()))

    def to_rich(self) -> Any:
        """The same listing as a ``rich.tree.Tree`` (groups bold, arrays with their layout)."""
        return rich_tree(str(self.path), list(self._walk()))


# --------------------------------------------------------------------------- location checks


def _check_location(out: Path, path: Path) -> None:
    if out.exists() and not out.is_dir():
        raise StoreError(f"--out {out} is a file, not a folder")
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file, not a zarr store folder; use a new --out")


def _check_writable(target: Path, out: Path) -> None:
    """Fail early, with one line, if ``target`` (or its nearest existing parent) is read-only.

    ``os.access`` rather than a probe file: it also reports read-only file systems for root,
    and it leaves no trace in a store we must not modify.
    """
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StoreError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"--out {out} is not writable ({existing}: read-only or no permission)")
