"""A function in a process beside the caller (the studies side by side in ``lossatlas run``):
its result and its errors come back, a dead child is one error line, and two drivers adding
attributes to one group of a folder store lose none of each other's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossatlas.config import load_config
from lossatlas.errors import DataError, ExecutionError
from lossatlas.execute.beside import BesideRun
from lossatlas.store import AtlasStore
from lossatlas.studies.config import RunConfig
from lossatlas.studies.run import overlaps
from tests import _ray_units


def test_the_result_comes_back_from_a_child_of_the_given_threads() -> None:
    assert BesideRun(_ray_units.torch_threads, (), name="a count", threads=1).result() == 1
    assert BesideRun(_ray_units.square, (7,), name="a square").result() == 49


def test_the_childs_error_is_raised_unchanged() -> None:
    run = BesideRun(_ray_units.raise_data_error, ("bad labels",), name="a study")
    with pytest.raises(DataError, match=r"^bad labels$"):
        run.result()


def test_a_dead_child_is_one_error_line() -> None:
    run = BesideRun(_ray_units.always_die, (), name="the geometry & topology study")
    with pytest.raises(ExecutionError, match=r"geometry & topology study.*died") as info:
        run.result()
    assert "\n" not in str(info.value)
    assert f"exit code {-signal.SIGKILL}" in str(info.value)


def test_stop_ends_a_child_that_still_runs() -> None:
    run = BesideRun(_ray_units.sleep_forever, (), name="forever")
    pid = run._process.pid
    assert pid is not None
    run.stop()
    assert not run._process.is_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_two_drivers_lose_none_of_each_others_attributes(tmp_path: Path) -> None:
    # Without the attribute lock each read-merge-write may drop the other driver's keys.
    store = AtlasStore.open(tmp_path, config={"name": "two drivers"})
    store.ensure_group("claims")
    start = time.time() + 5.0  # both children started and imported by then
    runs = [
        BesideRun(_ray_units.add_attrs, (str(tmp_path), "claims", prefix, 150, start), name=prefix)
        for prefix in ("wedge", "horoi")
    ]
    for run in runs:
        run.result()
    attrs = store.attrs("claims")
    assert {f"{p}{i}" for p in ("wedge", "horoi") for i in range(150)} <= set(attrs)


def test_only_the_process_pool_with_both_studies_on_a_folder_overlaps(tmp_path: Path) -> None:
    def config(*overrides: str) -> RunConfig:
        return load_config("smoke", overrides=list(overrides), schema=RunConfig)

    assert overlaps(config("execution.executor=processes"), tmp_path)
    assert not overlaps(config(), tmp_path)  # local: one study after the other
    assert not overlaps(config("execution.executor=processes", "horoi.enabled=false"), tmp_path)
    off = config("execution.executor=processes", "execution.overlap_studies=false")
    assert not overlaps(off, tmp_path)
    assert not overlaps(config("execution.executor=processes"), "memory://bucket/run")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_when_its_parent_is_killed() -> None:
    # A SIGKILLed driver runs no clean-up: its child must not go on writing to the store.
    script = (
        "from lossatlas.execute.beside import BesideRun\n"
        "from tests._ray_units import sleep_forever\n"
        "import time\n"
        "if __name__ == '__main__':\n"
        "    run = BesideRun(sleep_forever, (), name='forever')\n"
        "    print(run._process.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # running
        parent.kill()
        parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by init) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
