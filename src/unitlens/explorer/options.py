"""``ServeOptions`` and ``ReportOptions``: the options of the explorer as a local web app (``serve``, ``unitlens
serve``) and as a static folder (``write_report``, ``unitlens report``), with their defaults, checks and help."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.explorer.defaults import HOST, PORT
from unitlens.options import Options, option


@dataclass(frozen=True)
class ServeOptions(Options):
    """Where the web app listens, and where its lens backend runs the text and image probes."""

    port: int = option(PORT, "Port to listen on (0: any free port).", min=0, max=65535)
    host: str = option(HOST, "Address to listen on; the default serves this machine only.")
    device: str = option("cpu", "Device of the lens backend that runs text and image probes (cpu, cuda, "
                                "cuda:1 ...).", convert=str)


@dataclass(frozen=True)
class ReportOptions(Options):
    """Which layers the static folder has pages for."""

    layers: tuple[str, ...] | None = option(
        None, "Layer pages for these layers only (names or globs, comma-separated on the command line; default: "
              "all; the overview lists every layer).", metavar="NAMES")
