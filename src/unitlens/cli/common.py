"""What every command shares: the one console, table printing, the error exit, option parsing, and the group
class that routes ``unitlens mis ATLAS`` to ``unitlens mis score ATLAS``.

Commands print only through ``say`` and ``print_frame``, which look ``console`` up when called, so replacing
``unitlens.cli.common.console`` (as tests do) reaches every command.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from unitlens.errors import UnitlensError

console = Console(soft_wrap=True)


def say(*objects: Any) -> None:
    """Print through the shared console."""
    console.print(*objects)


def note(message: str) -> None:
    say(f"[yellow]note:[/] {message}")


def print_frame(frame: Any, title: str | None = None) -> None:
    """Print a DataFrame as a rich table (floats with 4 significant digits; long cells fold, never truncate)."""
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "iuf" else "left",
                         overflow="fold")  # a cell too wide for the terminal wraps, never loses characters
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)


def fail(err: Exception | str) -> NoReturn:
    """Print ``err`` as a one-line error and exit with status 2 (no traceback for expected failures)."""
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


@contextmanager
def failing_cleanly() -> Iterator[None]:
    """Within the block, a ``UnitlensError`` ends the command with its message and exit status 2."""
    try:
        yield
    except UnitlensError as err:
        fail(err)


def split_list(value: Optional[str]) -> Optional[list[str]]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None or empty -> None."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def short_names(paths: Any, n: int = 3) -> str:
    """The file names of the first ``n`` paths, comma-separated (exemplar lists in tables)."""
    return ", ".join(Path(p).name for p in list(paths)[:n])


class DefaultCommandGroup(TyperGroup):
    """A group that sends a first argument that is neither a sub-command nor an option to ``default_command``."""

    default_command = "score"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def group(name: str | None = None, help: str = "", default: str | None = None) -> typer.Typer:
    """A typer command group; with ``default``, a first argument that is no sub-command goes to that one."""
    cls = None
    if default is not None:
        cls = type(f"{(name or 'Default').title()}Group", (DefaultCommandGroup,), {"default_command": default})
    return typer.Typer(cls=cls, help=help, no_args_is_help=True, pretty_exceptions_enable=False)
