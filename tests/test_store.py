"""Tests for the atlas store: layout, round trips, resume checks, markers and user errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas.store
from lossatlas.errors import StoreError
from lossatlas.store import AtlasStore

SRC = Path(lossatlas.store.__file__).resolve().parents[1]
CONFIG = {"seed": 3, "data": {"name": "mnist1d", "seed": 0}, "model": {"name": "mlp"}}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime, to prove nothing was touched."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> AtlasStore:
    return AtlasStore.open(tmp_path / "out", config=CONFIG)


# --------------------------------------------------------------------------- layout, round trips


def test_open_creates_store_with_versions_and_config(tmp_path: Path) -> None:
    store = AtlasStore.open(tmp_path / "new" / "out", config=CONFIG)
    assert store.path == tmp_path / "new" / "out" / "atlas.zarr"
    assert store.out_dir == tmp_path / "new" / "out"
    attrs = store.attrs()
    assert attrs["config"] == CONFIG
    assert set(attrs["lossatlas"]) == {"version", "created", "torch", "numpy", "zarr", "python"}
    # Reopening with the same config is the resume path.
    assert AtlasStore.open(tmp_path / "new" / "out", config=CONFIG).attrs() == attrs


def test_array_and_attrs_round_trip(store: AtlasStore) -> None:
    store.ensure_group("train/run0", attrs={"seeds": np.arange(3)})
    store.create_array("train/run0/w", (4, 6), "float32", (2, 3), attrs={"unit": "nats"})
    data = np.arange(24, dtype=np.float32).reshape(4, 6)
    store.write("train/run0/w", None, data)
    np.testing.assert_array_equal(store.read("train/run0/w"), data)
    assert store.attrs("train/run0") == {"seeds": [0, 1, 2]}
    assert store.attrs("train/run0/w") == {"unit": "nats"}
    store.update_attrs("train/run0", {"lr": np.float64(0.1)})
    assert store.attrs("train/run0") == {"seeds": [0, 1, 2], "lr": 0.1}
    assert store.has("train") and store.has("train/run0/w") and not store.has("nope")
    assert store.array("train/run0/w").chunks == (2, 3)
    assert store.group("train/run0").attrs["lr"] == 0.1


def test_chunked_region_writes_and_fill(store: AtlasStore) -> None:
    store.create_array("traj", (6, 4), "float64", (2, 4))
    store.write("traj", (slice(2, 4), slice(None)), np.ones((2, 4)))
    store.write("traj", (slice(4, 6),), torch.full((2, 4), 2.0, dtype=torch.float64))
    out = store.read("traj")
    assert np.isnan(out[:2]).all()  # untouched chunks read as the NaN fill
    np.testing.assert_array_equal(out[2:4], 1.0)
    np.testing.assert_array_equal(store.read("traj", (slice(4, 6), slice(1, 3))), 2.0)
    store.create_array("counts", (5,), "int64", (5,))
    np.testing.assert_array_equal(store.read("counts"), 0)


def test_torch_bfloat16_is_written_as_float(store: AtlasStore) -> None:
    store.create_array("b", (3,), "float32", (3,))
    store.write("b", None, torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16))
    np.testing.assert_array_equal(store.read("b"), [1.0, 2.0, 3.0])


def test_create_array_is_idempotent_and_checks_layout(store: AtlasStore) -> None:
    first = store.create_array("a", (10, 2), "float32", (5, 2))
    store.write("a", None, np.ones((10, 2)))
    again = store.create_array("a", (10, 2), np.float32, (5, 2))
    assert again.shape == first.shape
    np.testing.assert_array_equal(store.read("a"), 1.0)  # resume keeps the data
    with pytest.raises(StoreError, match="has shape"):
        store.create_array("a", (10, 3), "float32", (5, 3))
    with pytest.raises(StoreError, match="has shape"):
        store.create_array("a", (10, 2), "float64", (5, 2))
    store.ensure_group("g")
    with pytest.raises(StoreError, match="is a group"):
        store.create_array("g", (1,), "float32", (1,))


def test_missing_nodes_raise_store_error(store: AtlasStore) -> None:
    with pytest.raises(StoreError, match="no array"):
        store.read("missing")
    with pytest.raises(StoreError, match="no group"):
        store.group("missing")
    with pytest.raises(StoreError, match="reserved"):
        store.ensure_group("g/_units")


def test_bytes_round_trip(store: AtlasStore) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
    store.save_bytes("figures/loss.png", png, "image/png")
    assert store.load_bytes("figures/loss.png") == png
    assert store.attrs("figures/loss.png")["media_type"] == "image/png"
    store.save_bytes("figures/loss.png", b"<html></html>", "text/html")  # replace
    assert store.load_bytes("figures/loss.png") == b"<html></html>"
    store.save_bytes("figures/empty.html", b"", "text/html")
    assert store.load_bytes("figures/empty.html") == b""


def test_timings_accumulate(store: AtlasStore) -> None:
    store.ensure_group("g")
    store.record_timing("g", "train", 1.5)
    store.record_timing("g", "train", 2.0, accumulate=True)
    store.record_timing("g", "eval", 0.25)
    assert store.timings("g") == {"train": 3.5, "eval": 0.25}


def test_describe_lists_groups_arrays_and_units(store: AtlasStore) -> None:
    store.ensure_group("train", attrs={"seeds": [1, 2]})
    store.create_array("train/loss", (8, 3), "float32", (4, 3))
    store.update_attrs("train", {"units_total": 3})
    store.mark_done("train", "members-0000-0015")
    store.save_bytes("figures/a.png", b"png", "image/png")
    tree = dict(store.tree())
    assert tree["train/loss"] == "float32 [8, 3] chunks [4, 3]"
    assert "units 1/3 complete" in tree["train"]
    assert "seeds=[1, 2]" in tree["train"]
    assert "data=mnist1d" in tree[""] and "seed=3" in tree[""]
    assert "image/png, 3 bytes" in tree["figures/a.png"]
    text = store.describe()
    assert "loss: float32 [8, 3] chunks [4, 3]" in text
    assert "_units" not in text

    from rich.console import Console

    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(store.to_rich())
    assert "units 1/3 complete" in console.export_text()
    console.file.close()


# --------------------------------------------------------------------------- config checks


def test_different_config_is_refused_without_modifying(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path, config=CONFIG)
    before = _snapshot(tmp_path)
    other = {**CONFIG, "seed": 4}
    with pytest.raises(StoreError, match=r"holds a different config \(seed was 3, now 4\)"):
        AtlasStore.open(tmp_path, config=other)
    assert _snapshot(tmp_path) == before


def test_fingerprint_decides_what_must_match(tmp_path: Path) -> None:
    AtlasStore.open(tmp_path, config=CONFIG, fingerprint={"data": "mnist1d"})
    # A config change outside the fingerprint (e.g. the device) is allowed...
    AtlasStore.open(tmp_path, config={**CONFIG, "seed": 9}, fingerprint={"data": "mnist1d"})
    # ...one inside it is not.
    with pytest.raises(StoreError, match="data was"):
        AtlasStore.open(tmp_path, config=CONFIG, fingerprint={"data": "digits"})


def test_group_fingerprint_mismatch_modifies_nothing(store: AtlasStore) -> None:
    store.ensure_group("jumps", attrs={"n": 4}, fingerprint={"radius": 1.0})
    store.create_array("jumps/x", (4,), "float32", (2,))
    store.write("jumps/x", None, np.arange(4))
    store.mark_done("jumps", "jump-0000")
    before = _snapshot(store.out_dir)

    with pytest.raises(StoreError, match=r"group 'jumps'.*radius was 1.0, now 2.0"):
        store.ensure_group("jumps", attrs={"n": 5}, fingerprint={"radius": 2.0})

    assert _snapshot(store.out_dir) == before
    # The same fingerprint resumes; with no fingerprint nothing is checked.
    store.ensure_group("jumps", fingerprint={"radius": 1.0})
    store.ensure_group("jumps")
    assert store.unit_done("jumps", "jump-0000")


# --------------------------------------------------------------------------- user errors


def test_out_dir_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("keep me")
    with pytest.raises(StoreError, match="is a file"):
        AtlasStore.open(target)
    with pytest.raises(StoreError, match="is a file"):
        AtlasStore.open(target / "below")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "atlas.zarr").write_text("not a store")
    with pytest.raises(StoreError, match="is a file"):
        AtlasStore.open(tmp_path / "other")
    assert target.read_text() == "keep me"
    assert (tmp_path / "other" / "atlas.zarr").read_text() == "not a store"


def test_missing_store_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no atlas store"):
        AtlasStore.open(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


def test_foreign_folder_is_not_adopted(tmp_path: Path) -> None:
    (tmp_path / "atlas.zarr").mkdir()
    (tmp_path / "atlas.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a zarr store"):
        AtlasStore.open(tmp_path)
    assert (tmp_path / "atlas.zarr" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "content",
    [b'{"zarr_format": 3, "node_ty', b"", b"[1, 2]", b'{"zarr_format": 3, "node_type": "group"}'],
    ids=["truncated", "empty", "not-an-object", "not-lossatlas"],
)
def test_corrupt_root_metadata(tmp_path: Path, content: bytes) -> None:
    AtlasStore.open(tmp_path, config=CONFIG)
    meta = tmp_path / "atlas.zarr" / "zarr.json"
    meta.write_bytes(content)
    before = _snapshot(tmp_path)
    with pytest.raises(StoreError, match=r"atlas\.zarr (is corrupt|is a zarr store not made)"):
        AtlasStore.open(tmp_path, config=CONFIG)
    assert _snapshot(tmp_path) == before


def test_store_error_messages_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as info:
        AtlasStore.open(tmp_path / "file")
    assert "\n" not in str(info.value)


_READ_ONLY_SCRIPT = textwrap.dedent(
    """
    import sys
    from lossatlas.errors import StoreError
    from lossatlas.store import AtlasStore
    existing, fresh = sys.argv[1], sys.argv[2]
    for target in (existing, fresh):
        try:
            AtlasStore.open(target)
        except StoreError as exc:
            print("StoreError:", exc)
        else:
            print("opened")
    print("read-only:", AtlasStore.open(existing, read_only=True).attrs()["config"]["seed"])
    """
)


def _read_only_results(existing: Path, fresh: Path) -> list[str]:
    """Open two stores inside a read-only directory; return the lines the script printed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    python = [sys.executable, "-c", _READ_ONLY_SCRIPT, str(existing), str(fresh)]
    if os.geteuid() != 0:
        locked = [existing.parent, existing / "atlas.zarr"]
        for folder in locked:
            folder.chmod(0o555)
        try:
            done = subprocess.run(python, env=env, capture_output=True, text=True, timeout=60)
        finally:
            for folder in locked:
                folder.chmod(0o755)
    else:
        # chmod does not stop root; a read-only bind mount in a private mount namespace does.
        if shutil.which("unshare") is None:
            pytest.skip("running as root and `unshare` is missing: cannot make a read-only dir")
        root = str(existing.parent)
        remount = f"mount --bind {root} {root} && mount -o remount,bind,ro {root} {root}"
        shell = f'{remount} && exec "$@"'
        command = ["unshare", "--mount", "sh", "-c", shell, "sh", *python]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        if "mount" in done.stderr and "opened" not in done.stdout and not done.stdout:
            pytest.skip(f"running as root and cannot make a read-only mount: {done.stderr[-200:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_read_only_directory(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    existing, fresh = root / "existing", root / "fresh"
    AtlasStore.open(existing, config=CONFIG)
    lines = _read_only_results(existing, fresh)
    assert lines[0].startswith("StoreError: --out") and "is not writable" in lines[0]
    assert lines[1].startswith("StoreError: --out") and "is not writable" in lines[1]
    assert lines[2] == "read-only: 3"  # `lossatlas show` still works
    assert not fresh.exists()


# --------------------------------------------------------------------------- markers


def test_markers(store: AtlasStore) -> None:
    store.ensure_group("g")
    assert not store.unit_done("g", "u-0")
    store.mark_done("g", "u-0", {"seconds": 1.25})
    store.mark_done("g", "u-1")
    store.mark_done("g", "u-1")  # idempotent
    assert store.unit_done("g", "u-0")
    assert store.unit_info("g", "u-0")["seconds"] == 1.25
    assert store.completed_units("g") == ["u-0", "u-1"]
    assert store.completed_units("other") == []
    with pytest.raises(StoreError, match="invalid unit id"):
        store.mark_done("g", "../escape")
    with pytest.raises(StoreError, match="invalid unit id"):
        store.unit_done("g", "a/b")


def test_truncated_or_incomplete_marker_reads_as_not_done(store: AtlasStore) -> None:
    store.ensure_group("g")
    for unit in ("torn", "empty", "incomplete", "ok"):
        store.mark_done("g", unit)
    units = store.path / "g" / "_units"
    torn = units / "torn" / "zarr.json"
    torn.write_bytes(torn.read_bytes()[:-7])
    (units / "empty" / "zarr.json").write_bytes(b"")
    document = json.loads((units / "incomplete" / "zarr.json").read_bytes())
    document["attributes"]["complete"] = False
    (units / "incomplete" / "zarr.json").write_text(json.dumps(document))
    # A temp file left by a write killed before its rename must not count either.
    (units / "zarr.0123abcd.partial").write_bytes(b"{")

    assert not store.unit_done("g", "torn")
    assert not store.unit_done("g", "empty")
    assert not store.unit_done("g", "incomplete")
    assert store.completed_units("g") == ["ok"]
    assert "units 1 complete" in dict(store.tree())["g"]
    store.mark_done("g", "torn")  # re-running the unit repairs its marker
    assert store.unit_done("g", "torn")
