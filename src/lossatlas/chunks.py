"""Chunks of zarr v3 arrays: how the store checksums them, finds their keys and checks them.

Every array the store writes ends its codec chain with zarr's ``crc32c`` codec (after zarr's
default zstd): the stored bytes of each chunk carry a CRC-32C of themselves, so a chunk damaged
on disk, in a copy or in a sync fails its checksum instead of decoding to garbage. Checking one
needs no decompression (:func:`checksum_ok`), which keeps ``lossatlas verify`` cheap. Arrays
written before checksums have no ``crc32c`` codec (:func:`has_checksum`) and still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import google_crc32c
from zarr.codecs import Crc32cCodec, ZstdCodec

__all__ = ["COMPRESSORS", "ChunkDamage", "checksum_ok", "chunk_coords", "has_checksum"]

COMPRESSORS = (ZstdCodec(level=0, checksum=False), Crc32cCodec())
"""zarr's default compressor, then the checksum of the compressed bytes."""


@dataclass(frozen=True)
class ChunkDamage:
    """One damaged chunk: its array, its key in the store, its grid coordinates and why."""

    array: str
    key: str
    coords: tuple[int, ...]
    problem: str


def has_checksum(meta: dict[str, Any]) -> bool:
    codecs = meta.get("codecs") or []
    return bool(codecs) and isinstance(codecs[-1], dict) and codecs[-1].get("name") == "crc32c"


def checksum_ok(raw: bytes) -> bool:
    """Whether the CRC-32C that zarr's crc32c codec appended to ``raw`` matches the rest."""
    if len(raw) < 4:
        return False
    return google_crc32c.value(raw[:-4]).to_bytes(4, "little") == raw[-4:]


def chunk_coords(meta: dict[str, Any], suffix: str) -> tuple[int, ...] | None:
    """Grid coordinates of the chunk key ``suffix`` (relative to its array), or None."""
    encoding = meta.get("chunk_key_encoding") or {}
    separator = (encoding.get("configuration") or {}).get("separator", "/")
    if encoding.get("name", "default") == "default":
        if suffix == "c":
            return ()
        if not suffix.startswith(f"c{separator}"):
            return None
        suffix = suffix[2:]
    parts = suffix.split(separator)
    if not all(part.isdigit() for part in parts):
        return None
    return tuple(int(part) for part in parts)
