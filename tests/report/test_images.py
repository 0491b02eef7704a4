"""PNGs re-encoded with a palette: smaller, faithful, or passed through unchanged."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from lossatlas.report.images import MAX_MEAN_ERROR, optimise_png
from tests.report._stores import png


def _pixels(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"), dtype=int)


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_plot_gets_smaller_and_stays_faithful() -> None:
    blob = png(0, size=(4.0, 3.0))
    smaller = optimise_png(blob)
    assert len(smaller) < len(blob)
    assert Image.open(io.BytesIO(smaller)).mode == "P"
    assert np.abs(_pixels(smaller) - _pixels(blob)).mean() <= MAX_MEAN_ERROR


def test_an_image_a_palette_cannot_hold_is_kept_as_stored() -> None:
    # Random colours everywhere: 256 colours cannot stay within the error bound.
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    blob = _encode(Image.fromarray(noise, "RGB"))
    assert optimise_png(blob) == blob


def test_transparency_palettes_and_junk_pass_through() -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 128
    transparent = _encode(Image.fromarray(rgba, "RGBA"))
    assert optimise_png(transparent) == transparent
    palette = _encode(Image.new("P", (8, 8)))
    assert optimise_png(palette) == palette
    assert optimise_png(b"not a png") == b"not a png"
