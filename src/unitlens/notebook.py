"""HTML for Jupyter: the small pieces every result's ``_repr_html_`` is made of (tables, image strips, headers).

Results display themselves in a notebook (``Atlas``, a unit, an MIS run, a study, ...); this module holds the one
way they render a table or a row of thumbnails, so they look alike. Nothing here runs outside a notebook's display.
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_ROWS = 12


def escape(value: Any) -> str:
    return html.escape(str(value))


def header(title: str, facts: Mapping[str, Any]) -> str:
    """A bold title over ``key: value`` facts on one line each."""
    rows = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td style='text-align:left'>{escape(v)}</td>"
                   "</tr>" for k, v in facts.items())
    return f"<div><b>{escape(title)}</b><table>{rows}</table></div>"


def table(frame: Any, title: str = "", max_rows: int = MAX_ROWS) -> str:
    """A pandas table (its first ``max_rows`` rows, with how many more), floats to 4 significant digits."""
    shown = frame.head(max_rows)
    body = shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)
    return f"<div>{_caption(title)}{body}{_more(frame, max_rows)}</div>"


def _caption(title: str) -> str:
    return f"<div><b>{escape(title)}</b></div>" if title else ""


def _more(frame: Any, max_rows: int) -> str:
    return f"<div><i>and {len(frame) - max_rows} more rows</i></div>" if len(frame) > max_rows else ""


def image_uri(image: Any, size: int = 96) -> str:
    """A PIL image as a JPEG data URI, its longer side ``size`` pixels."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def images(items: Iterable[tuple[Any, str]], size: int = 96, title: str = "") -> str:
    """A row of thumbnails (image, caption)."""
    cells = "".join(f"<figure style='display:inline-block;margin:2px;text-align:center'>"
                    f"<img src='{image_uri(img, size)}' style='height:{size}px'/>"
                    f"<figcaption style='font-size:70%'>{escape(caption)}</figcaption></figure>"
                    for img, caption in items)
    return f"<div>{_caption(title)}<div>{cells}</div></div>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(value)


def image_table(frame: Any, thumbnails: Sequence[Any], title: str = "", size: int = 48,
                max_rows: int = MAX_ROWS) -> str:
    """A pandas table (its first ``max_rows`` rows) whose rows each lead with a thumbnail: ``thumbnails`` holds
    one PIL image (or None) per shown row."""
    shown = frame.head(max_rows)
    head = "".join(f"<th>{escape(c)}</th>" for c in ["", *shown.columns])
    rows = []
    for thumb, values in zip(list(thumbnails) + [None] * len(shown), shown.itertuples(index=False)):
        img = f"<img src='{image_uri(thumb, size)}' style='height:{size}px'/>" if thumb is not None else ""
        rows.append(f"<tr><td>{img}</td>{''.join(f'<td>{_cell(v)}</td>' for v in values)}</tr>")
    return f"<div>{_caption(title)}<table><tr>{head}</tr>{''.join(rows)}</table>{_more(frame, max_rows)}</div>"
