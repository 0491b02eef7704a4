from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lossatlas.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from lossatlas.errors import CheckpointError
from tests.conftest import tiny_mlp


def test_safetensors_round_trip(tmp_path: Path) -> None:
    source, target = tiny_mlp(), tiny_mlp()
    path = save_checkpoint(tmp_path / "w.safetensors", source)
    load_checkpoint(path, target)
    for a, b in zip(source.parameters(), target.parameters(), strict=True):
        assert torch.equal(a, b)


def test_pt_with_nested_state_dict_and_module_prefix(tmp_path: Path) -> None:
    source, target = tiny_mlp(), tiny_mlp()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "w.pt")
    load_checkpoint(tmp_path / "w.pt", target)
    assert torch.equal(source[0].weight, target[0].weight)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("pwned",))


@pytest.mark.parametrize(
    ("writer", "fragment"),
    [
        (lambda p: p.write_bytes(b"\x00garbage" * 10), "corrupt"),
        (lambda p: p.write_bytes(b""), "corrupt"),
        (lambda p: torch.save({"0.weight": torch.zeros(2, 2)}, p), "does not fit"),
        (lambda p: torch.save([1, 2, 3], p), "state dict"),
        (lambda p: torch.save({"x": _Evil()}, p), "corrupt"),  # weights_only refuses pickles
    ],
)
def test_bad_checkpoints_raise_one_line(tmp_path: Path, writer, fragment: str) -> None:
    path = tmp_path / "bad.pt"
    writer(path)
    with pytest.raises(CheckpointError, match=fragment) as info:
        load_checkpoint(path, tiny_mlp())
    assert "\n" not in str(info.value)


def test_truncated_safetensors_and_missing_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "w.safetensors", tiny_mlp())
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "none.pt")


def test_shape_mismatch_and_nan(tmp_path: Path) -> None:
    torch.save(tiny_mlp(hidden=8).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(tmp_path / "wide.pt", tiny_mlp())
    state = tiny_mlp().state_dict()
    state["0.bias"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(tmp_path / "nan.pt", tiny_mlp())
