"""steady_allocator: glibc's heap thresholds, set through mallopt where there is one."""

from __future__ import annotations

import platform

from lossatlas.allocator import steady_allocator


def test_it_applies_on_glibc_and_says_so() -> None:
    assert steady_allocator() is (platform.libc_ver()[0] == "glibc")
