"""`lossatlas verify`: damaged chunks, markers and documents are found, traced to their units,
and `--repair` plus a re-run recomputes exactly those units, to the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from lossatlas.errors import StoreError
from lossatlas.execute import LocalExecutor, Unit, run_units
from lossatlas.stages.output import Part, StageOutput, run_once, run_parts
from lossatlas.store import AtlasStore
from lossatlas.verify import repair_store, verify_store

ROWS, COLS, PER_UNIT = 8, 3, 2
GROUP = "pop"


def _values(start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of the test array: exact, seeded by the row index."""
    return np.stack([np.random.default_rng(r).normal(size=COLS) for r in range(start, stop)])


def _write_rows(out: str, start: int, stop: int) -> None:
    store = AtlasStore.open(out, create=False)
    store.write(f"{GROUP}/rows", (slice(start, stop),), _values(start, stop))
    store.write(f"{GROUP}/sums", (slice(start, stop),), _values(start, stop).sum(axis=1))


def _population(out: Path) -> list[str]:
    """A driver: creates the arrays, then runs one unit per PER_UNIT rows; returns ids run."""
    store = AtlasStore.open(out, config={"test": 1})
    store.ensure_group(GROUP, attrs={"rows": ROWS})
    store.create_array(f"{GROUP}/rows", (ROWS, COLS), "float64", (PER_UNIT, COLS))
    store.create_array(f"{GROUP}/sums", (ROWS,), "float64", (PER_UNIT,))
    units = [
        Unit(f"rows-{s}", _write_rows, (str(out), s, s + PER_UNIT))
        for s in range(0, ROWS, PER_UNIT)
    ]
    return run_units(LocalExecutor(progress=False), store, GROUP, units)


def _part(value: float) -> StageOutput:
    return StageOutput(arrays={"curve": np.arange(4.0) * value}, scalars={"top": 3 * value})


def _step(out: str) -> StageOutput:
    parts = [Part(f"v{i}", _part, (float(i),)) for i in range(3)]
    results = run_parts(out, "step/parts", parts, LocalExecutor(progress=False))
    total = sum(r.scalars["top"] for r in results.values())
    return StageOutput(arrays={"total": np.array([total])}, scalars={"total": total})


def _flip(path: Path, at: int = 6) -> None:
    data = bytearray(path.read_bytes())
    data[at % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def _finished(store: AtlasStore, group: str) -> dict[str, str]:
    return {u: store.unit_info(group, u)["finished"] for u in store.completed_units(group)}


def test_a_clean_store_verifies(tmp_path: Path) -> None:
    _population(tmp_path)
    report = verify_store(tmp_path)
    assert report.ok and report.chunks == 2 * ROWS // PER_UNIT and report.markers == 4
    assert report.decoded == 0  # every chunk carries a checksum
    assert report.lines()[-1] == "no damage found"


def test_a_damaged_chunk_fails_on_read_naming_array_and_unit(tmp_path: Path) -> None:
    _population(tmp_path)
    _flip(tmp_path / "atlas.zarr" / GROUP / "rows" / "c" / "2" / "0")
    store = AtlasStore.open(tmp_path, read_only=True)
    assert np.array_equal(store.read(f"{GROUP}/rows", (slice(0, 4),)), _values(0, 4))
    with pytest.raises(StoreError) as info:
        store.read(f"{GROUP}/rows")
    message = str(info.value)
    assert "array 'pop/rows'" in message and "pop/rows/c/2/0" in message
    assert "unit 'rows-4' of 'pop'" in message and "lossatlas verify" in message
    with pytest.raises(StoreError, match="rows-4"):  # direct zarr-style indexing too
        np.asarray(store.array(f"{GROUP}/rows")[5])


def test_repair_recomputes_exactly_the_damaged_unit(tmp_path: Path) -> None:
    _population(tmp_path)
    store = AtlasStore.open(tmp_path, read_only=True)
    before = _finished(store, GROUP)
    _flip(tmp_path / "atlas.zarr" / GROUP / "sums" / "c" / "3")
    report = verify_store(tmp_path)
    assert [(f.kind, f.key, sorted(f.units)) for f in report.findings] == [
        ("chunk", "pop/sums/c/3", [(GROUP, "rows-6")])
    ]
    assert report.units == [(GROUP, "rows-6")]
    repair_store(tmp_path, report)
    assert _population(tmp_path) == ["rows-6"]  # nothing else is recomputed
    after = _finished(store, GROUP)
    assert {u: t for u, t in after.items() if u != "rows-6"} == {
        u: t for u, t in before.items() if u != "rows-6"
    }
    assert np.array_equal(store.read(f"{GROUP}/rows"), _values(0, ROWS))
    assert np.array_equal(store.read(f"{GROUP}/sums"), _values(0, ROWS).sum(axis=1))
    assert verify_store(tmp_path).ok


def test_a_changed_marker_reads_as_not_done_and_is_found(tmp_path: Path) -> None:
    _population(tmp_path)
    marker = tmp_path / "atlas.zarr" / GROUP / "_units" / "rows-2" / "zarr.json"
    marker.write_text(marker.read_text().replace('"seconds": ', '"seconds": 1'))  # still JSON
    store = AtlasStore.open(tmp_path, read_only=True)
    assert not store.unit_done(GROUP, "rows-2")
    report = verify_store(tmp_path)
    assert [(f.kind, f.problem) for f in report.findings] == [("marker", "fails its checksum")]
    repair_store(tmp_path, report)
    assert _population(tmp_path) == ["rows-2"]
    assert verify_store(tmp_path).ok


def test_a_damaged_array_document_reruns_every_unit_that_wrote_it(tmp_path: Path) -> None:
    _population(tmp_path)
    (tmp_path / "atlas.zarr" / GROUP / "sums" / "zarr.json").write_text('{"zarr_format": 3, "no')
    report = verify_store(tmp_path)
    [finding] = report.findings
    assert finding.kind == "document" and finding.node_kind == "array"
    assert len(report.units) == ROWS // PER_UNIT
    repair_store(tmp_path, report)
    assert len(_population(tmp_path)) == ROWS // PER_UNIT
    store = AtlasStore.open(tmp_path, read_only=True)
    assert np.array_equal(store.read(f"{GROUP}/sums"), _values(0, ROWS).sum(axis=1))
    assert verify_store(tmp_path).ok


def test_a_damaged_part_reruns_the_part_and_the_step_that_gathered_it(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path, config={"test": 1})
    assert run_once(tmp_path, "step", {"v": 1}, _step, str(tmp_path))
    store = AtlasStore.open(tmp_path, read_only=True)
    parts_before = _finished(store, "step/parts")
    clean = store.read("step/parts/v1/curve")
    _flip(tmp_path / "atlas.zarr" / "step" / "parts" / "v1" / "curve" / "c" / "0")
    group_doc = tmp_path / "atlas.zarr" / "step" / "parts" / "v2" / "zarr.json"
    group_doc.write_text("not json")  # a part's group document: its attributes hold its result
    report = verify_store(tmp_path)
    assert {f.key for f in report.findings} == {
        "step/parts/v1/curve/c/0",
        "step/parts/v2/zarr.json",
    }
    assert report.units == [("step", "result"), ("step/parts", "v1"), ("step/parts", "v2")]
    repair_store(tmp_path, report)
    assert run_once(tmp_path, "step", {"v": 1}, _step, str(tmp_path))  # the step runs again
    parts_after = _finished(store, "step/parts")
    assert parts_after["v0"] == parts_before["v0"]  # the intact part was not recomputed
    assert np.array_equal(store.read("step/parts/v1/curve"), clean)
    assert store.attrs("step/parts/v2")["result"] == {"top": 6.0}
    assert store.attrs("step")["result"] == {"total": 9.0}
    assert verify_store(tmp_path).ok


def test_a_missing_group_document_is_found_and_rewritten(tmp_path: Path) -> None:
    _population(tmp_path)
    (tmp_path / "atlas.zarr" / GROUP / "zarr.json").unlink()
    report = verify_store(tmp_path)
    assert [(f.key, f.problem) for f in report.findings] == [("pop/zarr.json", "is missing")]
    repair_store(tmp_path, report)
    _population(tmp_path)  # the driver writes the group's attributes again
    assert AtlasStore.open(tmp_path, read_only=True).attrs(GROUP)["rows"] == ROWS
    assert verify_store(tmp_path).ok


def test_damage_no_unit_wrote_is_left_alone_and_exits_2(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config={"test": 1})
    store.create_array("loose", (4,), "float64", (2,))
    store.write("loose", None, np.arange(4.0))  # written by a driver, outside any unit
    _flip(tmp_path / "atlas.zarr" / "loose" / "c" / "1")
    report = verify_store(tmp_path)
    assert [f.key for f in report.unowned] == ["loose/c/1"]
    cli = [sys.executable, "-m", "lossatlas", "verify", str(tmp_path)]
    assert subprocess.run(cli, capture_output=True, text=True).returncode == 1
    result = subprocess.run([*cli, "--repair"], capture_output=True, text=True)
    assert result.returncode == 2 and "cannot be recomputed" in result.stderr
    assert (tmp_path / "atlas.zarr" / "loose" / "c" / "1").exists()  # the evidence stays


def test_stores_written_before_checksums_still_read_and_verify(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path, config={"test": 1})
    # An array as the store wrote them before checksums: zarr's default codecs only.
    old = zarr.create_array(
        store._store, name="old", shape=(4,), dtype="float64", chunks=(2,), fill_value=0.0
    )
    old[...] = np.arange(4.0)
    assert np.array_equal(store.read("old"), np.arange(4.0))
    report = verify_store(tmp_path)
    assert report.ok and report.decoded == 2
    # A marker from before seals and write logs still counts as complete.
    document = {"zarr_format": 3, "node_type": "group", "attributes": {"complete": True}}
    store.ensure_group("g")
    path = tmp_path / "atlas.zarr" / "g" / "_units" / "u" / "zarr.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(document))
    assert store.unit_done("g", "u") and verify_store(tmp_path).ok


def test_verify_cli_lists_damage_and_exit_codes(tmp_path: Path) -> None:
    _population(tmp_path)
    cli = [sys.executable, "-m", "lossatlas", "verify", str(tmp_path)]
    clean = subprocess.run(cli, capture_output=True, text=True)
    assert clean.returncode == 0 and "no damage found" in clean.stdout
    _flip(tmp_path / "atlas.zarr" / GROUP / "rows" / "c" / "0" / "0")
    found = subprocess.run(cli, capture_output=True, text=True)
    assert found.returncode == 1 and "pop: rows-0" in found.stdout
    fixed = subprocess.run([*cli, "--repair"], capture_output=True, text=True)
    assert fixed.returncode == 0 and "1 unit(s) marked incomplete" in fixed.stdout
    assert _population(tmp_path) == ["rows-0"]
    assert subprocess.run(cli, capture_output=True, text=True).returncode == 0
