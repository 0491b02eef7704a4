"""Units for the Ray and process-pool tests.

Ray pickles these by value, so its workers need not import ``tests``; the process pool's
spawned workers import them by name (they inherit the parent's ``sys.path``).
"""

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


def die_once_marked(out: str, group: str, unit_id: str, timeout: float = 60.0) -> None:
    """Wait until ``unit_id`` of ``group`` has its marker, then die (on every attempt).

    So the other unit has surely finished when this one is lost: on a busy machine a unit that
    dies at once can be reported lost before its sibling has even started, and the driver then
    cancels the sibling (as it should), which is not what a test of "finished units keep their
    markers" wants to see.
    """
    import time

    from lossatlas.store import AtlasStore

    deadline = time.monotonic() + timeout
    store = AtlasStore.open(out, read_only=True)
    while not store.unit_done(group, unit_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)


def square(value: int) -> int:
    """A trivial unit with a result."""
    return value * value


def bad_data(value: int) -> None:
    """A unit that fails the way bad user input does."""
    raise DataError(f"unit {value}: labels out of range")


def torch_threads() -> int:
    """The torch thread count of the process that runs the unit."""
    import torch

    return torch.get_num_threads()


def worker_pid() -> int:
    """The id of the process that runs the unit."""
    return os.getpid()


def raise_data_error(message: str) -> None:
    raise DataError(message)


def sleep_forever() -> None:
    import time

    while True:
        time.sleep(1)


def add_attrs(out: str, group: str, prefix: str, count: int, start: float) -> None:
    """From wall-clock time ``start`` on, merge ``count`` keys ``prefix0..`` into ``group``'s
    attributes, one update each (as a driver adding claims one step at a time)."""
    import time

    from lossatlas.store import AtlasStore

    store = AtlasStore.open(out, create=False)
    time.sleep(max(0.0, start - time.time()))  # both children update at the same time
    for i in range(count):
        store.update_attrs(group, {f"{prefix}{i}": i})
