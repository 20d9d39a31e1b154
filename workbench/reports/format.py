"""How numbers, colours and names are written in the reports (HTML, Markdown, JSON and console alike)."""

from __future__ import annotations

import html
import math
import re
from urllib.parse import quote

import numpy as np


def safe_name(stem: str) -> str:
    """A file name for an image stem (panels, sub-report folders)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:120] or "image"


def num(v: float, nd: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{nd}f}"


def pct(v: float, nd: int = 1) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.{nd}f}%"


def signed(v: float, nd: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:+.{nd}f}"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\](){}#+!|~$])")


def md_text(s) -> str:
    """User text (class, file, run names) as literal Markdown: ``<``, ``>`` and ``&`` as HTML entities
    (no raw HTML reaches a Markdown viewer), Markdown punctuation, ``|`` and ``$`` backslash-escaped
    (no emphasis, links, table cells or math from a name)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(str(s), quote=False))


def href(path: str) -> str:
    """A relative file path as a link target."""
    return quote(path)


def hex_colour(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def jsonable(x):
    """``x`` with numpy scalars as Python numbers and non-finite floats as None (valid JSON)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
