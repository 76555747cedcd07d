"""What every command shares: the one console, table printing, messages, the error and Ctrl-C exits, option
parsing, and the group class that routes ``unitlens mis ATLAS`` to ``unitlens mis score ATLAS``.

Commands print only through ``say``, ``note``, ``warn``, ``error`` and ``print_frame``, which look ``console`` and
``err_console`` up when called, so replacing them (as tests do) reaches every command. Tables go to stdout; errors,
warnings and notes go to stderr in every format; ``say`` (the command's own lines of output) goes to stdout, and to
stderr while stdout carries CSV or JSON.

Tables (``--format``, the shared ``FORMAT`` option; every command that prints a table takes it):

- ``table`` (default): a rich table that fits the console (80 columns when piped). Names and numbers are never
  cut: free text wraps at spaces. A table's key columns (``key=``, the columns it exists for) are always shown;
  other columns that cannot fit are dropped from the right with a note naming them, and when even the first and
  the key columns do not fit, long names wrap after ``.``, ``_``, ``/``, ``:`` or ``-`` (a one-row table is shown
  as field/value pairs instead).
- ``csv``: every table in full as a CSV block: a line ``# <name>: <title>``, the header row, the rows, a blank
  line.
- ``json``: one JSON object printed when the command ends, ``{name: {"title": ..., "rows": [{column: value}]}}``
  with the full tables (original column names).

``name`` is a fixed snake_case key per table (``by_layer``), never derived from the title; the title says what the
table shows. A command that prints several tables takes ``--table NAME`` (``tables(...)``, its choices the
names): it prints only that table, and in CSV without the ``#`` line, so the output is one plain CSV file.
"""
from __future__ import annotations

import json
import math
import numbers
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, Optional, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from unitlens.errors import Note, UnitlensError

console = Console(soft_wrap=True)
err_console = Console(soft_wrap=True, stderr=True)

FORMATS = ("table", "csv", "json")
RESUME_HINT = "run the same command again to resume"


class _Output:
    """The running command's table format, the one table it prints (``--table``), and (for JSON) the tables
    printed so far."""

    fmt = "table"
    only: str | None = None
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


# the display options: how a command prints, not what it computes. Every other option of a command is generated
# from a field of its options classes (``cli.options``) or is an input (tests/test_options.py checks this).
F = TypeVar("F", bound=Callable[..., Any])
DISPLAY_OPTIONS = ("--format", "--table", "--verbose")
TABLE_HELP = "Print only this table (with --format csv: one plain CSV file, no # line)."


def inputs(*names: str) -> Callable[[F], F]:
    """Mark the parameters ``names`` of a command as its inputs: what it works on (a class, a dataset, stored
    results to read, units to ablate), not settings of a step, so they have no options-class field."""

    def mark(fn: F) -> F:
        fn.input_options = names  # type: ignore[attr-defined]
        return fn

    return mark


def tables(*names: str) -> Any:
    """The ``--table NAME`` option of a command that prints the tables ``names`` (as its ``table`` parameter)."""

    def use(value: Optional[str]) -> Optional[str]:
        if value is not None and value not in names:
            raise typer.BadParameter(f"'{value}' is not a table of this command; choose one of {', '.join(names)}")
        _Output.only = value
        return value

    return typer.Option(None, "--table", callback=use, metavar="|".join(names), help=TABLE_HELP)


def machine_readable() -> bool:
    """True while tables go out as CSV or JSON (a command then prints its facts as a table, not as lines)."""
    return _Output.fmt != "table"


def _end_command() -> None:
    if _Output.fmt == "json" and _Output.tables:
        typer.echo(json.dumps(_Output.tables, indent=1, default=str))
    _Output.fmt, _Output.tables, _Output.only = "table", {}, None


def say(*objects: Any) -> None:
    """Print the command's own lines of output: stdout beside rich tables, stderr while stdout carries CSV/JSON."""
    (console if _Output.fmt == "table" else err_console).print(*objects)


def note(message: str) -> None:
    """A note (stderr, in every format)."""
    err_console.print(f"[yellow]note:[/] {escape(message)}")  # a message's "[record]" is text, not markup


def warn(message: str) -> None:
    """A warning: something was left out or went partly wrong, the command goes on (stderr, in every format)."""
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}")


def error(message: str, label: str = "error") -> None:
    """An error the command reports and then goes on or ends with its own status (stderr, in every format),
    after ``label`` ("failed" for one of several items)."""
    err_console.print(f"[bold red]{label}:[/] {escape(message)}")


def print_frame(frame: Any, title: str | None = None, *, name: str, full: Any = None,
                key: Sequence[str] = ()) -> None:
    """Print a DataFrame as the command's ``--format`` asks (see the module docstring), under the fixed key ``name``.

    ``table``: a rich table that fits the console, floats with 4 significant digits, the ``key`` columns always
    kept; ``csv``/``json``: ``full`` (default ``frame``: give the whole table where ``frame`` is a shortened view
    of it). With ``--table``, only the table of that name is printed.
    """
    if _Output.only is not None and name != _Output.only:
        return
    if _Output.fmt == "table":
        _print_table(frame, title, key)
        return
    data = frame if full is None else full
    if _Output.fmt == "csv":
        if _Output.only is None:
            typer.echo(f"# {name}: {title}" if title else f"# {name}")
        typer.echo(_flat_cells(data).to_csv(index=False), nl=False)
        if _Output.only is None:
            typer.echo("")
        return
    unique, i = name, 1
    while unique in _Output.tables:
        i += 1
        unique = f"{name}_{i}"
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


# a long name may wrap after these characters (when the key columns would not fit otherwise)
_BREAK = re.compile(r"(?<=[./_:\-])")


def _pieces(word: str) -> list[str]:
    return [p for p in _BREAK.split(word) if p]


def _longest_word(text: str, breakable: bool = False) -> int:
    words = text.split()
    if breakable:
        words = [p for w in words for p in _pieces(w)]
    return max((cell_len(w) for w in words), default=0)


def _fit(headers: list[str], rows: list[list[str]], width: int, key: Sequence[int] = (),
         breakable: Sequence[bool] = ()) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide, so the table fits ``width`` console columns.

    A column is at least as wide as its longest word (names and numbers are one word each, so they are never
    cut; text wraps at spaces), and at most as wide as its longest cell. The first column and the ``key`` columns
    are always kept: when their least widths do not fit, the ``breakable`` (text) ones among them may wrap long
    names after ``.``, ``_``, ``/``, ``:`` or ``-``. The other columns are kept from the left while their least
    widths fit; the space left widens the columns that need least more first.
    """
    n = len(headers)
    breakable = list(breakable) or [False] * n
    full = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    least = [max([_longest_word(h)] + [_longest_word(r[i]) for r in rows]) or 1 for i, h in enumerate(headers)]

    def room(count: int) -> int:  # space for cell text: borders and one space either side per column
        return width - (3 * count + 1)

    kept = sorted({0, *key})
    if sum(least[i] for i in kept) > room(len(kept)):
        for i in kept:
            if breakable[i]:
                least[i] = max([_longest_word(headers[i], True)] + [_longest_word(r[i], True) for r in rows]) or 1
    for i in range(n):
        if i not in kept and sum(least[j] for j in kept) + least[i] <= room(len(kept) + 1):
            kept = sorted([*kept, i])
    widths = [least[i] for i in kept]
    spare = room(len(kept)) - sum(widths)
    for pos in sorted(range(len(kept)), key=lambda p: full[kept[p]] - least[kept[p]]):
        grow = min(max(spare, 0), full[kept[pos]] - widths[pos])
        widths[pos] += grow
        spare -= grow
    return kept, widths


def _wrap_names(text: str, width: int) -> str:
    """``text`` with every word wider than ``width`` broken into lines after ``.``, ``_``, ``/``, ``:`` or ``-``."""
    out = []
    for word in text.split(" "):
        if cell_len(word) <= width:
            out.append(word)
            continue
        lines = [""]
        for piece in _pieces(word):
            if lines[-1] and cell_len(lines[-1] + piece) > width:
                lines.append("")
            lines[-1] += piece
        out.append("\n".join(lines))
    return " ".join(out)


def _print_table(frame: Any, title: str | None, key: Sequence[str] = ()) -> None:
    out = console
    headers = [str(c) for c in frame.columns]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    numeric = [frame.dtypes.iloc[i].kind in "iuf" for i in range(len(headers))]
    missing = [k for k in key if k not in headers]
    if missing:
        raise ValueError(f"key columns {missing} are not columns of the table ({headers})")
    keys = [headers.index(k) for k in key]
    breakable = [not x for x in numeric]
    kept, widths = _fit(headers, rows, out.width, keys, breakable)
    if len(kept) < len(headers) and len(rows) == 1:  # one wide row reads better as field / value pairs
        headers, rows, numeric = ["field", "value"], [[h, v] for h, v in zip(headers, rows[0])], [False, False]
        kept, widths = _fit(headers, rows, out.width, (), [True, True])
    wrapped = any(cell_len(row[i]) > w for row in rows for i, w in zip(kept, widths))
    table = Table(show_lines=wrapped)  # rule lines keep wrapped rows apart
    for i, w in zip(kept, widths):
        table.add_column(Text(_wrap_names(headers[i], w)), justify="right" if numeric[i] else "left", width=w,
                         overflow="fold")
    for row in rows:
        table.add_row(*[Text(_wrap_names(row[i], w)) for i, w in zip(kept, widths)])
    if title:
        out.print(Text(title, style="bold"))
    out.print(table)
    dropped = [headers[i] for i in range(len(headers)) if i not in kept]
    if dropped:
        note(f"{len(dropped)} column(s) do not fit in {out.width} columns: {', '.join(dropped)} "
             "(--format csv or json prints every column)")


def fail(err: Exception | str) -> NoReturn:
    """Print ``err`` as a one-line error (stderr) and exit with status 2 (no traceback for expected failures)."""
    _Output.tables = {}  # a failed command prints no partial JSON
    error(str(err))
    raise typer.Exit(code=2)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning as one line on stderr: ``note: ...`` for a ``Note``, else ``warning: ...`` (no Python
    source line)."""
    (note if issubclass(category, Note) else warn)(str(message))


@contextmanager
def failing_cleanly() -> Iterator[None]:
    """Within the block, a ``UnitlensError`` ends the command with its message and exit status 2, and library
    warnings are printed as notes."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            yield
        except UnitlensError as err:
            fail(err)


@contextmanager
def resumable(kept: str = "") -> Iterator[None]:
    """Within the block of a command that resumes where it stopped, Ctrl-C ends it with "interrupted; run the same
    command again to resume" (and what was ``kept``) and exit status 130."""
    try:
        yield
    except KeyboardInterrupt:
        _Output.tables = {}
        err_console.print(f"[yellow]interrupted;[/] {RESUME_HINT}" + (f" ({kept})" if kept else ""))
        raise typer.Exit(code=130) from None


def load_named_model(model: Any, meta: bool = False) -> Any:
    """The model of a ``ModelOptions``, loaded (``meta``: without weights); notes what a non-strict checkpoint load
    skipped."""
    loaded = model.load(meta=meta)
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
