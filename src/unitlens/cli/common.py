"""What every command shares: the one console, table printing, the error exit, option parsing, and the group
class that routes ``unitlens mis ATLAS`` to ``unitlens mis score ATLAS``.

Commands print only through ``say``, ``note`` and ``print_frame``, which look ``console`` (and, for messages
while tables go out as CSV/JSON, ``err_console``) up when called, so replacing them (as tests do) reaches every
command.

Tables (``--format``, the shared ``FORMAT`` option):

- ``table`` (default): a rich table that fits the console (80 columns when piped). Names and numbers are never
  cut: free text wraps at spaces, and columns that cannot fit are dropped from the right with a note naming them
  (a one-row table is shown as field/value pairs instead).
- ``csv``: every table in full as a CSV block: a line ``# <name>: <title>``, the header row, the rows, a blank
  line. Messages go to stderr, so stdout holds only the blocks.
- ``json``: one JSON object printed when the command ends, ``{name: {"title": ..., "rows": [{column: value}]}}``
  with the full tables (original column names); messages go to stderr.

``name`` is a stable snake_case key per table (``by_layer``), the title says what the table shows.
"""
from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from unitlens.errors import UnitlensError

console = Console(soft_wrap=True)
err_console = Console(soft_wrap=True, stderr=True)

FORMATS = ("table", "csv", "json")


class _Output:
    """The running command's table format, and (for JSON) the tables printed so far."""

    fmt = "table"
    tables: dict[str, dict] = {}


def _use_format(ctx: typer.Context, value: str) -> str:
    """``--format``'s callback: print this command's tables as ``value``; JSON goes out when the command ends."""
    if value not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}")
    _Output.fmt, _Output.tables = value, {}
    ctx.call_on_close(_end_command)
    return value


# every command that prints a table takes this option (as its ``fmt`` parameter; the callback does the rest)
FORMAT = typer.Option("table", "--format", callback=_use_format, metavar="table|csv|json",
                      help="table (fits the terminal), or csv / json: every table in full, messages on stderr.")


def machine_readable() -> bool:
    """True while tables go out as CSV or JSON (a command then prints its facts as a table, not as lines)."""
    return _Output.fmt != "table"


def _end_command() -> None:
    if _Output.fmt == "json" and _Output.tables:
        typer.echo(json.dumps(_Output.tables, indent=1, default=str))
    _Output.fmt, _Output.tables = "table", {}


def _messages() -> Console:
    """Messages share stdout with rich tables, and go to stderr while stdout carries CSV or JSON."""
    return console if _Output.fmt == "table" else err_console


def say(*objects: Any) -> None:
    """Print a message through the shared console (stderr while tables are printed as CSV or JSON)."""
    _messages().print(*objects)


def note(message: str) -> None:
    say(f"[yellow]note:[/] {message}")


def print_frame(frame: Any, title: str | None = None, name: str | None = None, full: Any = None) -> None:
    """Print a DataFrame as the command's ``--format`` asks (see the module docstring).

    ``table``: a rich table that fits the console, floats with 4 significant digits; ``csv``/``json``: ``full``
    (default ``frame``: give the whole table where ``frame`` is a shortened view of it) under the key ``name``
    (default: derived from the title).
    """
    if _Output.fmt == "table":
        _print_table(frame, title)
        return
    data = frame if full is None else full
    key = name or _slug(title)
    if _Output.fmt == "csv":
        typer.echo(f"# {key}: {title}" if title else f"# {key}")
        typer.echo(_flat_cells(data).to_csv(index=False), nl=False)
        typer.echo("")
        return
    unique, i = key, 1
    while unique in _Output.tables:
        i += 1
        unique = f"{key}_{i}"
    rows = [{str(k): _plain(v) for k, v in row.items()} for row in data.to_dict(orient="records")]
    _Output.tables[unique] = {"title": title, "rows": rows}


def _plain(value: Any) -> Any:
    """A cell as a JSON value: numbers at full precision, NaN/inf as null, arrays as lists, other objects as text."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    import pandas as pd

    return None if pd.isna(value) is True else str(value)  # pandas' NA and NaT are null


def _slug(title: str | None) -> str:
    return re.sub(r"[^0-9a-z]+", "_", (title or "table").lower()).strip("_")[:40] or "table"


def _flat_cells(frame: Any) -> Any:
    """List-valued cells (exemplar paths) as ``a;b;c`` strings, for CSV."""
    out = frame.copy()
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        if column.dtype == object and column.map(lambda v: isinstance(v, (list, tuple))).any():
            out.iloc[:, i] = column.map(lambda v: ";".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
    return out


def _cell(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, (numbers.Integral, bool)):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _longest_word(text: str) -> int:
    return max((cell_len(w) for w in text.split()), default=0)


def _fit(headers: list[str], rows: list[list[str]], width: int) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide, so the table fits ``width`` console columns.

    A column is at least as wide as its longest word (names and numbers are one word each, so they are never
    cut; text wraps at spaces), and at most as wide as its longest cell. Columns are kept from the left while
    their least widths fit (the first always); the space left widens the columns that need least more first.
    """
    full = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    least = [max([_longest_word(h)] + [_longest_word(r[i]) for r in rows]) or 1 for i, h in enumerate(headers)]

    def room(n: int) -> int:  # space for cell text: borders and one space either side per column
        return width - (3 * n + 1)

    kept: list[int] = []
    for i in range(len(headers)):
        if not kept or sum(least[j] for j in kept) + least[i] <= room(len(kept) + 1):
            kept.append(i)
    widths = [least[i] for i in kept]
    spare = room(len(kept)) - sum(widths)
    for pos in sorted(range(len(kept)), key=lambda p: full[kept[p]] - least[kept[p]]):
        grow = min(max(spare, 0), full[kept[pos]] - widths[pos])
        widths[pos] += grow
        spare -= grow
    return kept, widths


def _print_table(frame: Any, title: str | None) -> None:
    out = console
    headers = [str(c) for c in frame.columns]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    numeric = [frame.dtypes.iloc[i].kind in "iuf" for i in range(len(headers))]
    kept, widths = _fit(headers, rows, out.width)
    if len(kept) < len(headers) and len(rows) == 1:  # one wide row reads better as field / value pairs
        headers, rows, numeric = ["field", "value"], [[h, v] for h, v in zip(headers, rows[0])], [False, False]
        kept, widths = _fit(headers, rows, out.width)
    wrapped = any(cell_len(row[i]) > w for row in rows for i, w in zip(kept, widths))
    table = Table(show_lines=wrapped)  # rule lines keep wrapped rows apart
    for i, w in zip(kept, widths):
        table.add_column(Text(headers[i]), justify="right" if numeric[i] else "left", width=w, overflow="fold")
    for row in rows:
        table.add_row(*[Text(row[i]) for i in kept])
    if title:
        out.print(Text(title, style="bold"))
    out.print(table)
    dropped = [headers[i] for i in range(len(headers)) if i not in kept]
    if dropped:
        note(f"{len(dropped)} column(s) do not fit in {out.width} columns: {', '.join(dropped)} "
             "(--format csv or json prints every column)")


def fail(err: Exception | str) -> NoReturn:
    """Print ``err`` as a one-line error and exit with status 2 (no traceback for expected failures)."""
    _Output.tables = {}  # a failed command prints no partial JSON
    _messages().print(f"[bold red]error:[/] {escape(str(err))}")  # a message's "[record]" is text, not markup
    raise typer.Exit(code=2)


@contextmanager
def failing_cleanly() -> Iterator[None]:
    """Within the block, a ``UnitlensError`` ends the command with its message and exit status 2."""
    try:
        yield
    except UnitlensError as err:
        fail(err)


def load_named_model(model: Any) -> Any:
    """The model of a ``ModelOptions``, loaded; notes what a non-strict checkpoint load skipped."""
    loaded = model.load()
    if loaded.checkpoint_fit is not None and not loaded.checkpoint_fit.complete:
        note(loaded.checkpoint_fit.describe())
    return loaded


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
