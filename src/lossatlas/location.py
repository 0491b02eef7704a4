"""Where a run's outputs live: a local folder, or an fsspec URL such as ``s3://bucket/prefix``.

A *location* is either a :class:`~pathlib.Path` (a local folder, NFS included) or a URL kept as
a ``str``. URLs must never pass through ``Path``: it collapses ``s3://b/p`` to ``s3:/b/p``,
which is a valid local path and would silently write a folder named ``s3:``. So code that
handles an ``--out`` value calls :func:`as_location` once, joins names with
:func:`join_location`, and hands ``str(location)`` to worker processes, which give it back to
:func:`as_location` (directly or through ``AtlasStore.open``) and get the same location.

Filesystem options (credentials, endpoints) come from fsspec's own configuration
(``FSSPEC_S3_KEY``-style environment variables or ``~/.config/fsspec``) and the backend's usual
sources (``AWS_*`` variables, instance roles), because worker processes receive the location as
one string and must reach the same storage with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from lossatlas.errors import StoreError
from lossatlas.faults import StoreFault, describe_error, fault_message

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = [
    "Location",
    "as_location",
    "describe_error",
    "is_url",
    "join_location",
    "location_name",
    "put_whole",
    "replace_file",
    "storage_options",
    "url_filesystem",
    "write_bytes",
    "write_kind",
]

#: A local folder (``Path``) or an fsspec URL (``str``); see the module docstring.
Location: TypeAlias = Path | str

# "scheme://" as fsspec reads it; "a::b://" chains (e.g. "simplecache::s3://...") count too.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*://")
# What a URL looks like after pathlib collapsed its "//": "s3:/bucket/prefix".
_COLLAPSED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):$")


def is_url(out: str | Path) -> bool:
    """Whether ``out`` names an fsspec URL (``s3://...``, ``file://...``) rather than a folder.

    Only a ``str`` can be a URL: a ``Path`` has already lost the ``//``.
    """
    return isinstance(out, str) and _URL.match(out) is not None


def as_location(out: str | Path) -> Location:
    """Normalise an ``--out`` value: ``~`` expanded for folders, trailing ``/`` dropped for URLs.

    Raises :class:`StoreError` for a URL without a path (``s3://``) and for a path that looks
    like a URL mangled by ``Path`` (``s3:/bucket``), instead of writing a folder named ``s3:``.
    """
    if is_url(out):
        url = str(out)
        scheme, _, rest = url.partition("://")
        rest = rest.rstrip("/")
        if not rest:
            raise StoreError(f"--out {url}: the URL names no bucket or folder")
        return f"{scheme}://{rest}"
    path = Path(out).expanduser()
    head = path.parts[0] if path.parts else ""
    match = _COLLAPSED.match(head)
    if match and _is_protocol(match.group(1)):
        raise StoreError(
            f"--out {out} looks like a URL ({match.group(1)}://...) that lost a '/' (was it "
            "passed through pathlib.Path?); pass the URL as a string"
        )
    return path


def join_location(out: Location, *names: str) -> Location:
    """``out/name/...``: a ``Path`` for folders, a ``str`` URL for URLs."""
    parts = [n.strip("/") for n in names if n.strip("/")]
    if is_url(out):
        return "/".join([str(out).rstrip("/"), *parts])
    return Path(out).joinpath(*parts)


def location_name(out: Location) -> str:
    """The last component of ``out`` (``run`` for ``s3://b/run``), for titles and messages."""
    if is_url(out):
        rest = str(out).partition("://")[2].rstrip("/")
        return rest.rsplit("/", 1)[-1] or str(out)
    return Path(out).name or str(out)


# --------------------------------------------------------------------------- filesystems


def _is_protocol(name: str) -> bool:
    import fsspec

    return name.lower() in fsspec.available_protocols()


def _filesystem_class(url: str) -> type[AbstractFileSystem] | None:
    """The fsspec class for ``url``'s protocol (``None`` for chained URLs), or a StoreError."""
    import fsspec
    from fsspec.registry import known_implementations

    protocol = url.partition("://")[0]
    if "::" in protocol:
        return None  # fsspec resolves chains itself; they get no extra options
    try:
        return fsspec.get_filesystem_class(protocol)
    except ValueError as exc:
        raise StoreError(
            f"--out {url}: unknown protocol '{protocol}://'; use a folder or an fsspec URL "
            "such as s3://bucket/prefix"
        ) from exc
    except ImportError as exc:
        module = str(known_implementations.get(protocol, {}).get("class", "")).split(".")[0]
        hint = f"; pip install {module}" if module and module != "fsspec" else ""
        raise StoreError(
            f"--out {url}: the {protocol}:// protocol needs a package that is not installed "
            f"({exc}{hint})"
        ) from exc


def storage_options(url: str) -> dict[str, Any]:
    """The fsspec options lossatlas adds for ``url`` (StoreError for an unusable protocol).

    Local files get ``auto_mkdir`` because zarr writes keys without making their folders.
    Other backends get their listing cache turned off: unit markers are written by other
    processes, and a cached listing would hide them from the driver for good.
    """
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem

    cls = _filesystem_class(url)
    if cls is None or issubclass(cls, MemoryFileSystem):
        return {}
    if issubclass(cls, LocalFileSystem):
        return {"auto_mkdir": True}
    return {"use_listings_cache": False}


def url_filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """A synchronous fsspec filesystem for ``url`` and the path within it.

    Raises :class:`StoreError` (one line) for an unknown protocol, a missing backend package or
    options the backend rejects; nothing is contacted yet.
    """
    from fsspec.core import url_to_fs

    options = storage_options(url)
    try:
        return url_to_fs(url, **options)
    except ImportError as exc:  # a chained URL whose backend is missing
        raise StoreError(f"--out {url}: a package is missing ({describe_error(exc)})") from exc
    except Exception as exc:
        # Backends validate options and URLs in their own ways; any failure means the same.
        raise StoreError(f"--out {url}: cannot use this location ({describe_error(exc)})") from exc


# --------------------------------------------------------------------------- writing files

# Backends whose one PUT of an object is applied whole or not at all: a reader never sees half.
_WHOLE_OBJECT_PROTOCOLS = frozenset(
    {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "memory"}
)


def write_kind(fs: AbstractFileSystem) -> str:
    """How a whole file is written on ``fs`` so that a reader never sees half of it.

    ``"rename"``: local files, a temporary file beside the target renamed into place;
    ``"whole"``: object stores, where one upload is applied whole or not at all;
    ``"swap"``: anything else (sftp, hdfs, webdav, ...), written under a temporary name and
    then moved over the target (a rename where the backend has one, a copy where it has not).
    """
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        return "rename"
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if any(p in _WHOLE_OBJECT_PROTOCOLS for p in protocols):
        return "whole"
    return "swap"


def put_whole(fs: AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` on the synchronous filesystem ``fs`` atomically.

    The strategy is :func:`write_kind`'s. OS and backend errors propagate unchanged, so
    callers name the operation in their own message.
    """
    kind = write_kind(fs)
    if kind == "rename":
        replace_file(Path(path), data)
    elif kind == "whole":
        fs.pipe_file(path, data)
    else:
        partial = swap_name(path)
        try:
            fs.pipe_file(partial, data)
            fs.mv(partial, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm(partial)
            raise


def swap_name(path: str) -> str:
    """A temporary name beside ``path`` for a write-then-swap (hidden, unique per writer)."""
    head, _, name = path.rpartition("/")
    hidden = f".{name}.{uuid.uuid4().hex[:12]}.partial"
    return f"{head}/{hidden}" if head else hidden


def replace_file(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target`` and rename it into place.

    The temporary file is removed if anything fails, so a failed or killed write leaves the old
    ``target`` (or none) and at most a hidden ``.NAME.*.partial`` file, never half a target.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".partial", dir=target.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(partial, 0o644)  # mkstemp makes it private; these files are meant to be shared
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def write_bytes(target: Location, data: bytes) -> None:
    """Write a whole file (summary, report) so that a reader never sees half of it.

    Folders and ``file://`` URLs: a temporary file beside the target, renamed into place.
    Object stores: one upload, applied whole or not at all. Other URLs: written under a
    temporary name, then moved over the target. Raises :class:`StoreError` (one line, naming
    the file and how to resume) when the file cannot be written.
    """
    if not is_url(target):
        try:
            replace_file(Path(target), data)
        except OSError as exc:
            raise StoreFault(fault_message(exc, "write", target)) from exc
        return
    url = str(target)
    fs, path = url_filesystem(url)
    try:
        put_whole(fs, path, data)
    except OSError as exc:
        raise StoreFault(fault_message(exc, "write", url)) from exc
    except Exception as exc:
        # Credentials, network and permission failures all mean "not written"; say so in one line.
        raise StoreError(f"cannot write {url}: {describe_error(exc)}") from exc
