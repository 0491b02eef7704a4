"""Explicit, hierarchical seeding.

There is no global RNG state in lossatlas: every random draw uses a ``torch.Generator`` built
here from the config's seed plus the identity of the unit of work that draws it (for example
``("member", 3)`` or ``("jump", 0.5, 2)``). numpy's ``SeedSequence`` mixes the parts, so the
same (seed, unit id) gives the same stream on any executor and in any order.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["derive_seed", "make_generator", "numpy_rng"]


def _part_to_int(part: object) -> int:
    # Stable across processes (unlike hash()), so Ray workers and local runs agree.
    digest = hashlib.blake2b(repr(part).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def derive_seed(seed: int, *unit_id: object) -> int:
    """Return a 63-bit seed determined by ``seed`` and the parts of ``unit_id``."""
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, *(_part_to_int(p) for p in unit_id)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def make_generator(
    seed: int, *unit_id: object, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A ``torch.Generator`` seeded from ``(seed, *unit_id)``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *unit_id))
    return generator


def numpy_rng(seed: int, *unit_id: object) -> np.random.Generator:
    """A numpy ``Generator`` seeded from ``(seed, *unit_id)``."""
    return np.random.default_rng(derive_seed(seed, *unit_id))
