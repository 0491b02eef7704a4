"""Units for the Ray tests. Ray pickles these by value, so workers need not import ``tests``."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from lossatlas.errors import DataError
from lossatlas.execute import Unit


def die_after_first_attempt(flag_dir: str, inner: Unit) -> Any:
    """Run ``inner`` (its rows are written), then SIGKILL this worker on the first attempt.

    The kill lands after the unit's data but before its completion marker: the worst moment,
    since a retry must rewrite the same chunks and the marker must still appear exactly once.
    A flag file per unit id records that the first attempt happened.
    """
    result = inner()
    flag = Path(flag_dir) / f"{inner.id}.killed"
    if not flag.exists():
        flag.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def always_die() -> None:
    """A unit whose worker dies on every attempt."""
    os.kill(os.getpid(), signal.SIGKILL)


def square(value: int) -> int:
    """A trivial unit with a result."""
    return value * value


def bad_data(value: int) -> None:
    """A unit that fails the way bad user input does."""
    raise DataError(f"unit {value}: labels out of range")
