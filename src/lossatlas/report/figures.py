"""Stored figures as the report shows them: PNG data URIs, trusted plotly fragments, or text.

Only two kinds of stored content reach the page unescaped: base64 ``data:`` URIs of images, and
plotly ``<div>`` fragments that pass :func:`is_plotly_fragment`.
"""

from __future__ import annotations

import base64
import re

from lossatlas.errors import StoreError
from lossatlas.report.model import FigureView, clip
from lossatlas.store import AtlasStore

__all__ = ["figure_view", "image_view", "is_plotly_fragment", "is_wide", "words"]

_TEXT_LIMIT = 4000  # characters of an untrusted HTML blob shown as text
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WIDE_ASPECT = 1.9  # images at least this much wider than tall span the whole figure grid
_IMAGE_TYPE = re.compile(r"^image/[a-z0-9.+-]+$")
# What ``fig.to_html(full_html=False, include_plotlyjs=False)`` produces: an outer <div>, an
# optional inline config <script>, the graph <div>, and one inline <script> calling
# Plotly.newPlot. Anything else stored as HTML is shown as text.
_PLOTLY_FRAGMENT = re.compile(
    r"""\A\s*<div(\s[^<>]*)?>\s*
        (<script(\s[^<>]*)?>.*?</script>\s*)?
        <div\s+id="[A-Za-z0-9_-]+"\s+class="plotly-graph-div"[^<>]*>\s*</div>\s*
        <script(\s[^<>]*)?>(?P<code>.*?Plotly\.newPlot\(.*?)</script>\s*
        </div>\s*\Z""",
    re.DOTALL | re.VERBOSE,
)


def words(file_name: str) -> str:
    """``"toy_tunnel_loss.png"`` -> ``"Toy tunnel loss"``."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name else file_name
    words = re.sub(r"[_\-\s]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else file_name


def is_plotly_fragment(text: str) -> bool:
    """Whether stored HTML looks like plotly output (``to_html(full_html=False)``).

    Only such fragments are put on the page unescaped: an outer ``<div>``, the graph ``<div>``
    and inline scripts calling ``Plotly.newPlot``, with no external ``src``.
    """
    match = _PLOTLY_FRAGMENT.match(text)
    if match is None:
        return False
    # No external resources, no nested documents: plotly fragments never need them.
    return re.search(r"<(iframe|object|embed|link|img)\b|\bsrc\s*=", text, re.IGNORECASE) is None


def image_view(
    name: str,
    path: str,
    anchor: str,
    blob: bytes,
    media_type: str,
    claims: tuple[tuple[str, str], ...],
) -> FigureView:
    if media_type == "image/png" and not blob.startswith(_PNG_SIGNATURE):
        return FigureView(
            name, path, anchor, words(name), "text", "", media_type, claims,
            note=f"stored as image/png but is not a PNG ({len(blob)} bytes); not shown",
        )  # fmt: skip
    uri = f"data:{media_type};base64,{base64.b64encode(blob).decode('ascii')}"
    return FigureView(
        name, path, anchor, words(name), "image", uri, media_type, claims, wide=is_wide(blob)
    )


def is_wide(blob: bytes) -> bool:
    """Whether a PNG is much wider than tall (multi-panel figures), read from its header."""
    if not blob.startswith(_PNG_SIGNATURE) or len(blob) < 24:
        return False
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    return height > 0 and width / height >= _WIDE_ASPECT


def figure_view(
    store: AtlasStore, path: str, anchor: str, claims: tuple[tuple[str, str], ...]
) -> FigureView:
    name = path.rsplit("/", 1)[-1]
    attrs = store.attrs(path)
    media_type = str(attrs.get("media_type") or "")
    if not media_type:
        media_type = "image/png" if name.endswith(".png") else "text/html"
    try:
        blob = store.load_bytes(path)
    except StoreError as exc:
        return FigureView(
            name, path, anchor, words(name), "text", "", media_type, claims, note=str(exc)
        )
    if _IMAGE_TYPE.match(media_type):
        # <img> never runs scripts, so even SVG is safe as a data URI.
        return image_view(name, path, anchor, blob, media_type, claims)
    text = blob.decode("utf-8", errors="replace")
    if media_type == "text/html" and is_plotly_fragment(text):
        return FigureView(name, path, anchor, words(name), "plotly", text, media_type, claims)
    return FigureView(
        name, path, anchor, words(name), "text", clip(text, _TEXT_LIMIT), media_type, claims,
        note=f"{media_type} that does not look like plotly output, so it is shown as text",
    )  # fmt: skip
