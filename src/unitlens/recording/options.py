"""``RecordOptions``: every option of the record pass (``record``, ``record_many``, ``unitlens record``, a study's
``[record]`` table), with its default, check and help."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.options import Options, option
from unitlens.recording.defaults import (
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    MERGE_EVERY,
    REPEATED,
    REPEATED_SPLIT,
    SPATIAL,
    SPATIAL_DEFAULT,
    TIE_SEED,
    TOKENS,
    TOKENS_DEFAULT,
    K,
)
from unitlens.zoo.options import channels_last_option, device_option
from unitlens.zoo.units import LAYER_TYPES


@dataclass(frozen=True)
class RecordOptions(Options):
    """What the record pass keeps per unit, which layers it records, and how it runs (no setting of
    ``batch_size``, ``num_workers``, ``checkpoint_every``, ``merge_every``, ``micro_batch`` or ``device``
    changes the atlas)."""

    layers: tuple[str, ...] | None = option(
        None, "Layer names or globs to record (comma-separated on the command line; default: every analysable "
              "layer of --types but --exclude and the first and last).", metavar="NAMES")
    types: tuple[str, ...] = option(LAYER_TYPES, "Layer types to take when no layer names are given.",
                                    choices=LAYER_TYPES, metavar="TYPES")
    exclude: tuple[str, ...] | None = option(None, "Layer names or globs to leave out.", metavar="NAMES")
    keep_first_last: bool = option(False, "Keep the model's first and last layer (the MIS paper skips them).")
    repeated: str = option(REPEATED_SPLIT, "A module that runs several times per forward: record each call as "
                                           "its own layer NAME@1, NAME@2, ... (split), or leave it out (skip).",
                           choices=REPEATED)
    k: int = option(K, "Exemplars kept per unit and direction (MIS needs N*(K+1) = 200).", min=1)
    spatial: str = option(SPATIAL_DEFAULT, "Reduce (B,C,H,W) maps over space.", choices=SPATIAL)
    tokens: str = option(TOKENS_DEFAULT, "Reduce (B,T,C) token outputs.", choices=TOKENS)
    batch_size: int = option(BATCH_SIZE, "Images per batch of the data loader.", min=1)
    device: str | None = device_option()
    num_workers: int | None = option(None, "Data-loading worker processes (default: half the torch threads, "
                                           "1 to 4).", min=0, flag="--workers")
    micro_batch: int | None = option(None, "Images per forward within a batch (default: 8 on a CPU, where layer "
                                           "outputs then stay in cache; the whole batch on an accelerator).", min=1)
    channels_last: bool = channels_last_option()
    checkpoint_every: int = option(CHECKPOINT_EVERY, "Images between two saved states of the run (resume points).",
                                   min=1)
    merge_every: int = option(MERGE_EVERY, "Samples buffered before a top-k merge (memory against speed).", min=1)
    tie_seed: int = option(TIE_SEED, "Seeds the order of samples with equal activations.")
    content_hash: bool | None = option(
        None, "Fingerprint the dataset and key cached embeddings by each file's bytes (hashed once, kept in "
              "samples.parquet; the default for new atlases). --no-content-hash reads no file for it, for huge "
              "datasets, at a risk: an image replaced by another of the same size goes unnoticed. Default: as the "
              "atlas at --out was recorded.")
    force: bool = option(False, "Record again even if the atlas is complete.")
