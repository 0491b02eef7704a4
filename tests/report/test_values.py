"""Stored JSON values prepared for display."""

from __future__ import annotations

from lossatlas.report.values import clip, display_value, duration, fact_value, format_scalar


def test_display_value_shapes() -> None:
    assert display_value(0.123456789).text == "0.1235"
    assert display_value(None).text == "n/a"
    assert display_value(True).text == "true"
    mapping = display_value({"a": 1, "b": {"c": [1, 2]}})
    assert mapping.kind == "mapping"
    assert [k for k, _ in mapping.items] == ["a", "b"]
    records = display_value([{"x": 1}, {"x": 2, "y": "z"}])
    assert records.kind == "records" and records.columns == ("x", "y")
    matrix = display_value([[1.0, 0.5], [0.5, 1.0]])
    assert matrix.kind == "matrix" and matrix.text == "2×2 matrix"
    long = display_value(list(range(100)))
    assert "(100 values)" in long.text and long.full.startswith("[0, 1, 2")
    big = display_value([[0.0] * 40] * 40)
    assert big.kind == "text" and big.text == "40×40 matrix" and big.full


def test_big_settings_fold_into_yaml() -> None:
    value = fact_value({f"k{i}": i for i in range(20)})
    assert value.kind == "text" and value.text.startswith("k0, k1")
    assert "k19: 19" in value.full
    assert fact_value({"a": 1}).kind == "mapping"


def test_scalars_durations_and_clipping() -> None:
    assert format_scalar(3) == "3" and format_scalar(1e-7) == "1e-07"
    assert duration(5.25) == "5.2 s" and duration(125) == "2 min 5 s"
    assert duration(3 * 3600 + 120) == "3 h 2 min"
    assert clip("abcdef", 4) == "abc…" and clip("abc", 4) == "abc"
