"""``unitlens serve`` and ``unitlens report``: the explorer, as a local web app or a static folder.

::

    unitlens serve ATLAS_OR_STUDY [more ...] [--port 8765] [--host 127.0.0.1]
    unitlens report ATLAS_OR_STUDY [more ...] --out DIR [--layers GLOBS]

Their options are generated from ``ServeOptions`` and ``ReportOptions`` (``cli.options``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from unitlens.cli.common import failing_cleanly, note, say
from unitlens.cli.options import options_command
from unitlens.explorer.options import ReportOptions, ServeOptions


@options_command
def serve(paths: List[Path] = typer.Argument(..., help="Atlas folders and/or study folders."), *,
          options: ServeOptions) -> None:
    """Browse every unit in a browser: a local, read-only web app (prints its URL; Ctrl-C stops it)."""
    from unitlens.explorer import serve as run

    def ready(url: str) -> None:
        say(f"unitlens explorer on [bold]{url}[/] serving {', '.join(str(p) for p in paths)} (Ctrl-C to stop)")
        if options.host not in ("127.0.0.1", "localhost", "::1"):
            note(f"listening on {options.host}: anyone who can reach this machine can browse these atlases")

    with failing_cleanly():
        run([str(p) for p in paths], options, on_ready=ready)


@options_command
def report(
    paths: List[Path] = typer.Argument(..., help="Atlas folders and/or study folders."),
    out: Path = typer.Option(..., "--out", help="Folder to write (new, empty, or an earlier report)."),
    *,
    options: ReportOptions,
) -> None:
    """Write the explorer as a static folder that opens from file:// (no text search or image probes)."""
    from unitlens.explorer import write_report

    with failing_cleanly():
        r = write_report([str(p) for p in paths], out, options, progress=True)
    for message in r.notes:
        note(message)
    say(f"wrote {r.out / 'index.html'}: {r.atlases} atlases, {r.layers} layers, {r.units:,} unit pages, "
        f"{r.images:,} thumbnails, {r.bytes / 2**20:.1f} MiB in {r.seconds:.1f} s; open it with a browser "
        f"(file://{Path(r.out).resolve() / 'index.html'})")
