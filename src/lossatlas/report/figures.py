"""Stored figures as the report shows them: PNG data URIs, trusted plotly fragments, or text.

Only two kinds of stored content reach the page unescaped: base64 ``data:`` URIs of images, and
plotly ``<div>`` fragments that pass :func:`is_plotly_fragment`. A fragment's scripts are kept
from running while the page loads (their type becomes :data:`DEFERRED_SCRIPT`); the page runs
them when the figure comes into view, once plotly.js is unpacked. PNGs are re-encoded smaller
(:func:`~.images.optimise_png`). Each figure's caption and alt text come from its stored
``caption`` and ``alt`` attributes (:class:`lossatlas.stages.output.Caption`), else from its
file name.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from lossatlas.errors import StoreError
from lossatlas.report.bundle import trace_types
from lossatlas.report.images import optimise_png
from lossatlas.report.model import FigureView
from lossatlas.report.values import clip
from lossatlas.store import AtlasStore

__all__ = [
    "DEFERRED_SCRIPT",
    "defer_scripts",
    "figure_view",
    "image_view",
    "is_plotly_fragment",
    "is_wide",
    "short_title",
    "words",
]

DEFERRED_SCRIPT = "text/x-lossatlas-deferred"
"""The script type of a plotly fragment's scripts on the page: not run by the browser, but by
the page's loader when the figure is drawn."""
_TITLE_LIMIT = 70  # characters of a figure's title in the navigation

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


def short_title(caption: str, name: str) -> str:
    """A figure's title in the navigation: its caption up to the first ``": "`` or ``". "``,
    else the file name in words."""
    if not caption:
        return words(name)
    head = re.split(r":\s|\.\s|\.$", caption.strip(), maxsplit=1)[0]
    return clip(head or caption, _TITLE_LIMIT)


def defer_scripts(fragment: str) -> str:
    """A trusted plotly fragment whose scripts wait for the page's loader (see the module)."""
    return re.sub(r"<script(\s[^<>]*)?>", f'<script type="{DEFERRED_SCRIPT}">', fragment)


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
    claims: tuple[tuple[str, str, str], ...],
    *,
    caption: str = "",
    alt: str = "",
) -> FigureView:
    """An image as a ``data:`` URI (a PNG re-encoded smaller when that is faithful)."""
    title = short_title(caption, name)
    caption = caption or words(name)
    if media_type == "image/png" and not blob.startswith(_PNG_SIGNATURE):
        return FigureView(
            name, path, anchor, caption, "text", "", media_type, claims,
            note=f"stored as image/png but is not a PNG ({len(blob)} bytes); not shown",
            title=title,
        )  # fmt: skip
    if media_type == "image/png":
        blob = optimise_png(blob)
    uri = f"data:{media_type};base64,{base64.b64encode(blob).decode('ascii')}"
    return FigureView(
        name, path, anchor, caption, "image", uri, media_type, claims,
        wide=is_wide(blob), alt=alt or caption, title=title,
    )  # fmt: skip


def is_wide(blob: bytes) -> bool:
    """Whether a PNG is much wider than tall (multi-panel figures), read from its header."""
    if not blob.startswith(_PNG_SIGNATURE) or len(blob) < 24:
        return False
    width, height = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    return height > 0 and width / height >= _WIDE_ASPECT


def _text(attrs: dict[str, Any], key: str) -> str:
    value = attrs.get(key)
    return value.strip() if isinstance(value, str) else ""


def figure_view(
    store: AtlasStore, path: str, anchor: str, claims: tuple[tuple[str, str, str], ...]
) -> FigureView:
    """The stored figure at ``path`` as the page shows it (see the module docstring)."""
    name = path.rsplit("/", 1)[-1]
    attrs = store.attrs(path)
    caption, alt = _text(attrs, "caption"), _text(attrs, "alt")
    title = short_title(caption, name)
    media_type = str(attrs.get("media_type") or "")
    if not media_type:
        media_type = "image/png" if name.endswith(".png") else "text/html"
    try:
        blob = store.load_bytes(path)
    except StoreError as exc:
        return FigureView(
            name, path, anchor, caption or words(name), "text", "", media_type, claims,
            note=str(exc), title=title,
        )  # fmt: skip
    if _IMAGE_TYPE.match(media_type):
        # <img> never runs scripts, so even SVG is safe as a data URI.
        return image_view(name, path, anchor, blob, media_type, claims, caption=caption, alt=alt)
    text = blob.decode("utf-8", errors="replace")
    caption = caption or words(name)
    if media_type == "text/html" and is_plotly_fragment(text):
        return FigureView(
            name, path, anchor, caption, "plotly", defer_scripts(text), media_type, claims,
            alt=alt or caption, title=title, traces=trace_types(text),
        )  # fmt: skip
    return FigureView(
        name, path, anchor, caption, "text", clip(text, _TEXT_LIMIT), media_type, claims,
        note=f"{media_type} that does not look like plotly output, so it is shown as text",
        title=title,
    )  # fmt: skip
