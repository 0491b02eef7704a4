"""The zarr stores under an atlas store: every key is written whole, and a lost folder is noticed.

* :class:`FolderStore` is zarr's ``LocalStore`` (a temporary file renamed into place for every
  key), except that it refuses to write once the store's own folder has vanished (an unmounted
  disk, a lost NFS mount, a deleted run): ``LocalStore`` would silently recreate the folder and
  scatter a headless half-store where the mount point was.
* :class:`URLStore` is zarr's ``FsspecStore``, except that each key is written the way
  :func:`lossatlas.location.write_kind` says: renamed into place on ``file://`` (where fsspec
  would write in place, so a kill could tear a ``zarr.json``), one upload on object stores, and
  write-then-swap elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os

from zarr.core.buffer import Buffer
from zarr.storage import FsspecStore, LocalStore

from lossatlas.location import put_whole, swap_name, write_kind

__all__ = ["FolderStore", "URLStore"]


class FolderStore(LocalStore):
    """``LocalStore`` that raises ``FileNotFoundError`` instead of recreating a vanished root."""

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise FileNotFoundError(errno.ENOENT, "the store folder vanished", str(self.root))

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``key`` whole (temp file + rename), if the store's folder still exists."""
        self._check_root()
        await super().set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """As ``LocalStore``, if the store's folder still exists."""
        self._check_root()
        await super().set_if_not_exists(key, value)


class URLStore(FsspecStore):
    """``FsspecStore`` whose every key is written whole (see the module docstring)."""

    async def set(self, key: str, value: Buffer, byte_range: tuple[int, int] | None = None) -> None:
        """Write ``key`` so that no reader (and no kill) ever sees half of it."""
        sync_fs = getattr(self.fs, "sync_fs", None)  # fsspec's async wrapper of a sync backend
        kind = write_kind(sync_fs if sync_fs is not None else self.fs)
        if kind == "whole" or byte_range is not None:
            await super().set(key, value, byte_range)
            return
        self._check_writable()
        path = f"{self.path.rstrip('/')}/{key}" if self.path else key
        data = value.to_bytes()
        if sync_fs is not None:
            await asyncio.to_thread(put_whole, sync_fs, path, data)
            return
        partial = swap_name(path)  # a natively async backend without whole-object writes
        try:
            await self.fs._pipe_file(partial, data)
            await self.fs._mv(partial, path)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.fs._rm(partial)
            raise
