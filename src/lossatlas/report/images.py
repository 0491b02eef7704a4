"""Smaller PNGs for the page: stored figures re-encoded with a 256-colour palette.

Plots are flat colours plus anti-aliased edges, so a median-cut palette keeps them visually
identical at a third to a half of the bytes. The re-encoded image is used only when it is
smaller *and* stays within a small mean error of the stored pixels; otherwise the stored bytes
go on the page unchanged. The store itself is never touched.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

__all__ = ["MAX_MEAN_ERROR", "optimise_png"]

MAX_MEAN_ERROR = 1.0
"""Largest mean absolute difference per channel (0-255 scale) a re-encoded PNG may have."""

_MAX_PIXELS = 12_000_000  # larger images are passed through (quantising them is slow)


def optimise_png(blob: bytes) -> bytes:
    """``blob`` (a PNG) as a palette PNG when that is smaller and faithful, else unchanged.

    Opaque images are quantised in RGB with median cut (no dithering); images with
    transparency, animations and anything Pillow cannot read are returned as they are.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning: pass it through
            image = Image.open(io.BytesIO(blob))
            image.load()
    except Exception:  # an unreadable image is shown (or reported) as stored
        return blob
    if getattr(image, "n_frames", 1) != 1 or image.width * image.height > _MAX_PIXELS:
        return blob
    if image.mode == "P":
        return blob  # already a palette image
    if image.mode in ("RGBA", "LA"):
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:
            return blob  # transparency: keep as stored
    rgb = image.convert("RGB")
    palette = rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    smaller = buffer.getvalue()
    if len(smaller) >= len(blob):
        return blob
    before = np.asarray(rgb, dtype=np.int16)
    after = np.asarray(palette.convert("RGB"), dtype=np.int16)
    if float(np.abs(after - before).mean()) > MAX_MEAN_ERROR:
        return blob
    return smaller
