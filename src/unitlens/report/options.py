"""``MISPlotOptions``: the options of the MIS figures of an atlas (``plot_mis``, ``unitlens plot mis``), with
their defaults and help."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.options import Options, option


@dataclass(frozen=True)
class MISPlotOptions(Options):
    """Which scores the MIS figures draw."""

    backend: str | None = option(None, "Which backend's scores (needed when there are scores of several).",
                                 metavar="NAME")
