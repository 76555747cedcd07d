"""The options of the relevance steps, each with its default, check and help: ``RelevanceOptions``
(``class_relevance``, ``unitlens relevance --class``), ``PredictedOptions`` (``predicted_relevance``, ``unitlens
relevance --predicted``) and ``GraphOptions`` (``attribution_graph``, ``unitlens graph``)."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.options import Options, option
from unitlens.relevance.defaults import (
    BATCH_SIZE,
    GRAPH_MIN_RELEVANCE,
    SAMPLE_RULE,
    SAMPLE_RULES,
    TOP_CLASSES,
    TOP_N,
)
from unitlens.zoo.options import channels_last_option, device_option


@dataclass(frozen=True)
class CrpPassOptions(Options):
    """What every relevance run over an atlas's samples shares: the layers it explains and how the CRP passes
    run (``batch_size``, ``device`` and ``channels_last`` change no result beyond float rounding)."""

    layers: tuple[str, ...] | None = option(
        None, "Layer names or globs to explain (comma-separated on the command line; default: every recorded "
              "layer).", metavar="NAMES")
    batch_size: int = option(BATCH_SIZE, "Images per CRP pass.", min=1)
    device: str | None = device_option()
    channels_last: bool = channels_last_option()


@dataclass(frozen=True)
class RelevanceOptions(CrpPassOptions):
    """Options of the class relevance: which samples explain the class, and how many of them each unit keeps."""

    samples: str = option(SAMPLE_RULE, "Which samples explain the class: top5 (the class is among their top-5 "
                                       "predictions), top1 (predicted as the class), or all.", choices=SAMPLE_RULES)
    top_n: int = option(TOP_N, "Samples kept per unit (highest relevance share).", min=1)


@dataclass(frozen=True)
class PredictedOptions(CrpPassOptions):
    """Options of the predicted-class relevance (every sample explains its own top-1 class)."""

    top_classes: int = option(TOP_CLASSES, "Classes kept per unit (highest mean share over the samples predicted "
                                           "as the class).", min=1)


@dataclass(frozen=True)
class GraphOptions(Options):
    """Options of the attribution graph: which units take part, and how the CRP passes run."""

    min_relevance: float = option(GRAPH_MIN_RELEVANCE, "Units whose highest relevance share for the class is below "
                                                       "this are left out.", min=0.0, max=1.0)
    batch_size: int = option(BATCH_SIZE, "(sample, group) pairs per CRP pass.", min=1)
    device: str | None = device_option()
    channels_last: bool = channels_last_option()
