"""The atlas store on an fsspec URL: the same operations as on a folder, through FsspecStore.

``file://`` stands in for shared storage (NFS, s3) because a second process can open it, and
``memory://`` checks that nothing assumes a local disk. Nothing here needs a network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import known_implementations

from lossatlas.claims import Claim, save_claims
from lossatlas.errors import StoreError
from lossatlas.execute import LocalExecutor, Unit, run_units
from lossatlas.location import as_location, is_url, join_location, location_name
from lossatlas.report import build_report
from lossatlas.stages.summary import write_summary
from lossatlas.store import AtlasStore
from tests.test_store import CONFIG, SRC, _snapshot

# The same test body as for folders, collected here with this module's URL ``store`` fixture.
from tests.test_store import test_array_and_attrs_round_trip as test_array_and_attrs_round_trip


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A fresh ``memory://`` folder, removed afterwards (the memory filesystem is global)."""
    name = f"lossatlas-test-{uuid.uuid4().hex}"
    yield f"memory://{name}/out"
    fs = MemoryFileSystem()
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.fixture
def file_url(tmp_path: Path) -> str:
    return (tmp_path / "out").as_uri()


@pytest.fixture(params=["file", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each operation test runs on both a ``file://`` and a ``memory://`` URL."""
    if request.param == "file":
        return str(request.getfixturevalue("file_url"))
    return str(request.getfixturevalue("memory_url"))


@pytest.fixture
def store(url: str) -> AtlasStore:
    return AtlasStore.open(url, config=CONFIG)


def _put(store: AtlasStore, key: str, data: bytes) -> None:
    """Overwrite one raw key of ``store`` behind zarr's back, as a crash or a user would."""
    with fsspec.open(f"{store.path}/{key}", "wb") as handle:
        handle.write(data)


def _get(store: AtlasStore, key: str) -> bytes:
    with fsspec.open(f"{store.path}/{key}", "rb") as handle:
        return bytes(handle.read())


# --------------------------------------------------------------------------- locations


def test_location_helpers() -> None:
    assert is_url("s3://bucket/run") and is_url("file:///tmp/x") and is_url("memory://x")
    assert is_url("simplecache::s3://bucket/run")
    assert not is_url("out/run") and not is_url(Path("/tmp/x")) and not is_url("C:/x")
    assert as_location("s3://bucket/run/") == "s3://bucket/run"
    assert as_location("~/run") == Path("~/run").expanduser()
    assert join_location("s3://bucket/run", "atlas.zarr", "g/") == "s3://bucket/run/atlas.zarr/g"
    assert join_location(Path("/tmp/run"), "summary.json") == Path("/tmp/run/summary.json")
    assert location_name("s3://bucket/run") == "run" and location_name(Path("/a/b")) == "b"


def test_url_mangled_by_pathlib_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="lost a '/'"):
        AtlasStore.open(Path("memory://bucket/run"))
    assert not any(tmp_path.iterdir())  # no local folder called "memory:"


# --------------------------------------------------------------------------- layout, round trips


def test_open_creates_store_at_file_url(tmp_path: Path, file_url: str) -> None:
    store = AtlasStore.open(file_url + "/", config=CONFIG)
    assert store.out_dir == file_url and isinstance(store.out_dir, str)
    assert store.path == f"{file_url}/atlas.zarr"
    assert (tmp_path / "out" / "atlas.zarr" / "zarr.json").is_file()
    attrs = store.attrs()
    assert attrs["config"] == CONFIG
    assert set(attrs["lossatlas"]) == {"version", "created", "torch", "numpy", "zarr", "python"}
    assert AtlasStore.open(file_url, config=CONFIG).attrs() == attrs
    assert repr(store) == f"AtlasStore('{file_url}/atlas.zarr')"


def test_out_dir_round_trips_through_str(store: AtlasStore) -> None:
    store.ensure_group("g")
    store.create_array("g/x", (4,), "float32", (2,))
    store.write("g/x", None, np.arange(4))
    again = AtlasStore.open(str(store.out_dir), create=False)
    assert again.out_dir == store.out_dir and again.path == store.path
    np.testing.assert_array_equal(again.read("g/x"), np.arange(4))
    reader = AtlasStore.open(str(store.out_dir), read_only=True)
    assert reader.read_only and reader.read("g/x")[3] == 3


def test_chunked_region_writes_and_fill(store: AtlasStore) -> None:
    store.create_array("traj", (6, 4), "float64", (2, 4))
    store.write("traj", (slice(2, 4), slice(None)), np.ones((2, 4)))
    store.write("traj", (slice(4, 6),), torch.full((2, 4), 2.0, dtype=torch.float64))
    out = store.read("traj")
    assert np.isnan(out[:2]).all()
    np.testing.assert_array_equal(out[2:4], 1.0)
    np.testing.assert_array_equal(store.read("traj", (slice(4, 6), slice(1, 3))), 2.0)


def test_bytes_round_trip(store: AtlasStore) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
    store.save_bytes("figures/loss.png", png, "image/png")
    assert store.load_bytes("figures/loss.png") == png
    store.save_bytes("figures/loss.png", b"<html></html>", "text/html")  # replace
    assert store.load_bytes("figures/loss.png") == b"<html></html>"
    assert store.attrs("figures/loss.png")["media_type"] == "text/html"
    store.save_bytes("figures/empty.html", b"", "text/html")
    assert store.load_bytes("figures/empty.html") == b""


def test_timings_and_describe(store: AtlasStore) -> None:
    store.ensure_group("train", attrs={"seeds": [1, 2]})
    store.create_array("train/loss", (8, 3), "float32", (4, 3))
    store.update_attrs("train", {"units_total": 3})
    store.mark_done("train", "members-0000-0015")
    store.record_timing("train", "fit", 1.5)
    store.record_timing("train", "fit", 2.0, accumulate=True)
    assert store.timings("train") == {"fit": 3.5}
    store.save_bytes("figures/a.png", b"png", "image/png")
    tree = dict(store.tree())
    assert tree["train/loss"] == "float32 [8, 3] chunks [4, 3]"
    assert "units 1/3 complete" in tree["train"] and "seeds=[1, 2]" in tree["train"]
    assert "data=mnist1d" in tree[""]
    assert "image/png, 3 bytes" in tree["figures/a.png"]
    text = store.describe()
    assert text.splitlines()[0] == f"{store.out_dir}/atlas.zarr"
    assert "loss: float32 [8, 3] chunks [4, 3]" in text and "_units" not in text


# --------------------------------------------------------------------------- markers


def test_markers(store: AtlasStore) -> None:
    store.ensure_group("g")
    assert not store.unit_done("g", "u-0")
    store.mark_done("g", "u-0", {"seconds": 1.25})
    store.mark_done("g", "u-1")
    store.mark_done("g", "u-1")
    assert store.unit_info("g", "u-0")["seconds"] == 1.25
    assert store.completed_units("g") == ["u-0", "u-1"]
    assert store.completed_units("other") == []
    with pytest.raises(StoreError, match="invalid unit id"):
        store.mark_done("g", "../escape")


def test_torn_or_incomplete_marker_reads_as_not_done(store: AtlasStore) -> None:
    store.ensure_group("g")
    for unit in ("torn", "incomplete", "ok"):
        store.mark_done("g", unit)
    torn = "g/_units/torn/zarr.json"
    _put(store, torn, _get(store, torn)[:-7])
    document = json.loads(_get(store, "g/_units/incomplete/zarr.json"))
    document["attributes"]["complete"] = False
    _put(store, "g/_units/incomplete/zarr.json", json.dumps(document).encode())
    assert store.completed_units("g") == ["ok"]
    store.mark_done("g", "torn")
    assert store.unit_done("g", "torn")


def _unit_writes_row(out: str, row: int) -> None:
    AtlasStore.open(out, create=False).write("g/rows", (slice(row, row + 1),), np.full((1, 3), row))


def test_run_units_reopens_the_url_for_each_unit(store: AtlasStore) -> None:
    # run_units hands str(store.out_dir) to each unit, as it would to a Ray worker.
    store.ensure_group("g")
    store.create_array("g/rows", (3, 3), "float64", (1, 3))
    units = [
        Unit(id=f"row-{i}", fn=_unit_writes_row, args=(str(store.out_dir), i)) for i in range(3)
    ]
    assert run_units(LocalExecutor(progress=False), store, "g", units) == [
        "row-0",
        "row-1",
        "row-2",
    ]
    assert run_units(LocalExecutor(progress=False), store, "g", units) == []  # resumed: all done
    np.testing.assert_array_equal(store.read("g/rows")[:, 0], [0, 1, 2])


_CHILD_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from lossatlas.store import AtlasStore
    store = AtlasStore.open(sys.argv[1], create=False)
    store.write("g/x", (slice(2, 4),), np.full((2, 3), 7.0))
    store.mark_done("g", "child", {"pid": 1})
    print(store.out_dir)
    """
)


def test_second_process_writes_its_own_chunks_and_marker(tmp_path: Path, file_url: str) -> None:
    store = AtlasStore.open(file_url, config=CONFIG)
    store.ensure_group("g")
    store.create_array("g/x", (4, 3), "float64", (2, 3))
    store.write("g/x", (slice(0, 2),), np.ones((2, 3)))
    store.mark_done("g", "parent")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD_SCRIPT, str(store.out_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == file_url  # the child saw the same URL, not a mangled path

    np.testing.assert_array_equal(store.read("g/x")[:2], 1.0)
    np.testing.assert_array_equal(store.read("g/x")[2:], 7.0)
    assert store.completed_units("g") == ["child", "parent"]
    assert (tmp_path / "out" / "atlas.zarr" / "g" / "_units" / "child" / "zarr.json").is_file()


# --------------------------------------------------------------------------- config checks


def test_different_config_is_refused_without_modifying(tmp_path: Path, file_url: str) -> None:
    AtlasStore.open(file_url, config=CONFIG)
    before = _snapshot(tmp_path)
    with pytest.raises(StoreError, match=r"holds a different config \(seed was 3, now 4\)"):
        AtlasStore.open(file_url, config={**CONFIG, "seed": 4})
    assert _snapshot(tmp_path) == before


def test_fingerprints(url: str) -> None:
    store = AtlasStore.open(url, config=CONFIG, fingerprint={"data": "mnist1d"})
    AtlasStore.open(url, config={**CONFIG, "seed": 9}, fingerprint={"data": "mnist1d"})
    with pytest.raises(StoreError, match="data was"):
        AtlasStore.open(url, config=CONFIG, fingerprint={"data": "digits"})
    store.ensure_group("jumps", fingerprint={"radius": 1.0})
    with pytest.raises(StoreError, match=r"group 'jumps'.*radius was 1.0, now 2.0"):
        store.ensure_group("jumps", fingerprint={"radius": 2.0})


@pytest.mark.parametrize(
    "content",
    [b'{"zarr_format": 3, "node_ty', b"", b"[1, 2]", b'{"zarr_format": 3, "node_type": "group"}'],
    ids=["truncated", "empty", "not-an-object", "not-lossatlas"],
)
def test_corrupt_root_metadata(url: str, content: bytes) -> None:
    store = AtlasStore.open(url, config=CONFIG)
    _put(store, "zarr.json", content)
    with pytest.raises(StoreError, match=r"atlas\.zarr (is corrupt|is a zarr store not made)"):
        AtlasStore.open(url, config=CONFIG)
    assert _get(store, "zarr.json") == content


# --------------------------------------------------------------------------- user errors


def test_missing_store_without_create(tmp_path: Path, url: str) -> None:
    for kwargs in ({"create": False}, {"read_only": True}):
        with pytest.raises(StoreError, match=r"no atlas store in .*expected .*atlas\.zarr"):
            AtlasStore.open(url, **kwargs)
    assert not (tmp_path / "out").exists()
    assert not fsspec.core.url_to_fs(url)[0].exists(fsspec.core.url_to_fs(url)[1])


def test_files_and_foreign_folders_are_not_adopted(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(StoreError, match="is a file, not a folder"):
        AtlasStore.open((tmp_path / "file").as_uri())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "atlas.zarr").write_text("not a store")
    with pytest.raises(StoreError, match="is a file, not a zarr store folder"):
        AtlasStore.open((tmp_path / "other").as_uri())
    (tmp_path / "mine" / "atlas.zarr").mkdir(parents=True)
    (tmp_path / "mine" / "atlas.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a zarr store"):
        AtlasStore.open((tmp_path / "mine").as_uri())
    assert (tmp_path / "file").read_text() == "keep me"
    assert (tmp_path / "other" / "atlas.zarr").read_text() == "not a store"
    assert sorted(p.name for p in (tmp_path / "mine" / "atlas.zarr").iterdir()) == ["notes.txt"]


def _one_line_error(out: str) -> str:
    with pytest.raises(StoreError) as info:
        AtlasStore.open(out)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_unknown_protocol_is_one_line() -> None:
    message = _one_line_error("nosuchproto://bucket/run")
    assert "unknown protocol 'nosuchproto://'" in message


def test_missing_backend_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # A protocol fsspec knows but whose package is absent, like s3:// without s3fs.
    monkeypatch.setitem(
        known_implementations,
        "lossatlasmissing",
        {"class": "lossatlas_no_such_pkg.FS", "err": "Install lossatlas_no_such_pkg"},
    )
    message = _one_line_error("lossatlasmissing://bucket/run")
    assert "needs a package that is not installed" in message
    assert "pip install lossatlas_no_such_pkg" in message


def test_s3_without_s3fs_names_the_package() -> None:
    try:
        import s3fs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("s3fs is installed here")
    assert "pip install s3fs" in _one_line_error("s3://bucket/prefix")


class _DeniedFileSystem(fsspec.AbstractFileSystem):
    """Refuses every request, as a bucket does without credentials."""

    protocol = "lossatlasdenied"

    def _denied(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("The AWS Access Key Id you provided does not exist in our records.")

    cat_file = info = ls = pipe_file = _denied


@pytest.fixture
def denied(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register ``lossatlasdenied://`` for this test only; returns a URL on it."""
    registry = sys.modules["fsspec.registry"]._registry  # the mapping fsspec looks classes up in
    monkeypatch.setitem(registry, "lossatlasdenied", _DeniedFileSystem)
    return "lossatlasdenied://bucket/run"


def test_missing_credentials_are_one_line(denied: str) -> None:
    message = _one_line_error(denied)
    assert message.startswith(f"cannot reach {denied}: PermissionError: The AWS Access Key")


def test_unwritable_summary_url_is_one_line(memory_url: str, denied: str) -> None:
    store = AtlasStore.open(memory_url, config=CONFIG)
    with pytest.raises(StoreError) as info:
        write_summary(store, f"{denied}/summary.json")
    message = str(info.value)
    assert message.startswith(f"cannot write {denied}/summary.json: permission denied")
    assert "PermissionError" in message and "re-running the same command resumes" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- summary and report


def _claim(cid: str, holds: bool | None) -> Claim:
    return Claim(
        id=cid,
        statement="s",
        paper_value={"mid": 845},
        paper_setup="paper",
        measured={"value": np.float32(1.5)},
        holds=holds,
        setup="ours",
        criterion="value > 1",
    )


def test_write_summary_to_url(tmp_path: Path, url: str) -> None:
    store = AtlasStore.open(url, config=CONFIG)
    save_claims(store, [_claim("a.one", True), _claim("b.two", None)])
    written = write_summary(store)
    assert written == f"{url}/summary.json"
    with fsspec.open(str(written), "rt") as handle:
        summary = json.load(handle)
    assert summary["counts"] == {
        "claims": 2,
        "holds": 1,
        "fails": 0,
        "inconclusive": 1,
        "does_not_hold": 0,
        "undecided": 1,
    }
    if url.startswith("file://"):
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
            "atlas.zarr",
            "summary.json",
        ]
    # An explicit target may be a URL too, whatever the store's location.
    elsewhere = (tmp_path / "copy" / "summary.json").as_uri()
    assert write_summary(store, elsewhere) == elsewhere
    assert json.loads((tmp_path / "copy" / "summary.json").read_text()) == summary


def test_build_report_to_url(url: str) -> None:
    AtlasStore.open(url, config=CONFIG)
    written = build_report(url)
    assert written == f"{url}/report.html"
    with fsspec.open(str(written), "rt", encoding="utf-8") as handle:
        page = handle.read()
    assert f"<code>{url}</code>" in page and "No claims in this store yet" in page
