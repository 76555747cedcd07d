"""``StudyPlotOptions``: the options of a study's figures (``plot_study``, ``unitlens plot study``), with their
defaults, checks and help."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.options import Options, option
from unitlens.study.defaults import DEPTH_BINS, WIDTH_BINS


@dataclass(frozen=True)
class StudyPlotOptions(Options):
    """Which epoch a checkpoint study's change figure shows, and how depth and width are binned."""

    epoch: int | None = option(None, "Checkpoint studies: the epoch whose per-layer MIS change is drawn (default: "
                                     "the first after initialisation).", min=0)
    depth_bins: int = option(DEPTH_BINS, "Equal-count bins of relative depth per layer type (MIS against depth).",
                             min=1)
    width_bins: int = option(WIDTH_BINS, "Equal-count bins of relative width per layer type (MIS against width).",
                             min=1)
