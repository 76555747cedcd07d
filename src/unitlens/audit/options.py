"""The options of the audit steps, each with its default, check and help: ``AuditOptions`` (``audit_class``,
``unitlens audit``), ``AuditTestOptions`` (``audit_test``, ``unitlens audit test``) and ``PruneOptions``
(``prune_check``, ``unitlens audit prune``)."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.audit.defaults import (
    ABLATE,
    ABLATIONS,
    AUDIT_MIN_RELEVANCE,
    BATCH_SIZE,
    EXEMPLARS,
    RELEVANCE_STAT,
    RELEVANCE_STATS,
)
from unitlens.options import Options, option
from unitlens.zoo.options import channels_last_option, device_option


@dataclass(frozen=True)
class AuditOptions(Options):
    """Which units of a class are judged, and what the audit keeps of them."""

    layers: tuple[str, ...] | None = option(
        None, "Layer names or globs to audit (comma-separated on the command line; default: every layer with "
              "relevance and lens vectors).", metavar="NAMES")
    min_relevance: float = option(AUDIT_MIN_RELEVANCE, "Judge only units whose relevance (share of the layer's "
                                                       "|relevance| per sample of the class) is at least this.",
                                  min=0.0, max=1.0)
    relevance_stat: str = option(RELEVANCE_STAT, "Relevance per unit: its max over the class's samples (the "
                                                 "paper's 2.8 % filter), or mean.", choices=RELEVANCE_STATS)
    exemplars: int = option(EXEMPLARS, "Concept examples kept per unit (table and figure).", min=1)
    device: str | None = option(None, "cpu, cuda, ... for embedding image concepts (default: cuda when present).",
                                convert=str)
    channels_last: bool = channels_last_option()
    write: bool = option(True, "Store the audit under <atlas>/audit (parquet, csv and json).", cli=False)


@dataclass(frozen=True)
class AuditTestOptions(Options):
    """How the model runs over the image sets (no option changes a result beyond float rounding)."""

    batch_size: int = option(BATCH_SIZE, "Images per forward pass.", min=1)
    device: str | None = device_option()
    channels_last: bool = channels_last_option()


@dataclass(frozen=True)
class PruneOptions(AuditTestOptions):
    """What the ablated units are set to, and how the model runs over the image sets."""

    ablate: str = option(ABLATE, "zero (the paper's pruning), or mean: each unit's mean activation over the atlas's "
                                 "data (for layers a batch norm follows).", choices=ABLATIONS)
