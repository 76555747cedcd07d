"""The one rich console every command prints through, and the small helpers the CLI modules share."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)


def print_frame(frame, title: str | None = None) -> None:
    """Print a DataFrame as a rich table (floats with 4 significant digits)."""
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "iuf" else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)


def fail(err: Exception) -> None:
    """Print ``err`` as a one-line error and exit with status 2 (no traceback for expected failures)."""
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


def split_list(value: Optional[str]) -> Optional[list[str]]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None or empty -> None."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def short_names(paths, n: int = 3) -> str:
    """The file names of the first ``n`` paths, comma-separated (exemplar lists in tables)."""
    return ", ".join(Path(p).name for p in list(paths)[:n])
