"""MkDocs hook: ``{{ options: module.Class }}`` in a page becomes the table of that options dataclass's fields
(option, command-line flag, type, default, help), read from the class itself, so the docs never repeat a default
or a help text by hand."""
from __future__ import annotations

import importlib
import re

from unitlens.options import describe_rows

PATTERN = re.compile(r"\{\{\s*options:\s*([\w.]+)\s*\}\}")


def _table(path: str) -> str:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    lines = ["| option | command line | type | default | what it does |", "|---|---|---|---|---|"]
    for row in describe_rows(cls):
        cells = [f"`{row['name']}`", f"`{row['flag']}`" if row["flag"] else "(Python only)", row["type"],
                 f"`{row['default']}`", row["help"].replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return PATTERN.sub(lambda m: _table(m.group(1)), markdown)
