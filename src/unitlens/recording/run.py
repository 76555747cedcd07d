"""``record(model, data, out)``: one forward pass with hooks on every selected layer, written as an atlas.

The run checkpoints its streaming state every ``checkpoint_every`` images (atomically); running the same
call again resumes from the last checkpoint and ends with the same atlas as an uninterrupted run. A
finished atlas is left alone unless ``force=True``. The pass itself is ``passes.record_pass``, the atlas's
files ``folder``; ``record_many`` (several models, one pass) shares both and the checks here.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from unitlens.atlas.layout import SAMPLES
from unitlens.atlas.lock import check_writable, writing
from unitlens.data.datasets import ImageDataset, load_dataset
from unitlens.errors import BadInput
from unitlens.recording.defaults import (
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    MERGE_EVERY,
    SPATIAL,
    SPATIAL_DEFAULT,
    TIE_SEED,
    TOKENS,
    TOKENS_DEFAULT,
    K,
)
from unitlens.recording.folder import RecordResult, completed_result, previous_manifest, record_config
from unitlens.recording.passes import record_pass
from unitlens.recording.state import MAX_SAMPLES
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import LAYER_TYPES, LayerInfo, enumerate_units


def record(
    model: LoadedModel,
    data: ImageDataset | str,
    out: str | Path,
    layers: list[LayerInfo] | list[str] | None = None,
    k: int = K,
    spatial: str = SPATIAL_DEFAULT,
    tokens: str = TOKENS_DEFAULT,
    batch_size: int = BATCH_SIZE,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    merge_every: int = MERGE_EVERY,
    channels_last: bool = True,
    force: bool = False,
    progress: bool = True,
    types: Sequence[str] = LAYER_TYPES,
    exclude: Sequence[str] | None = None,
    keep_first_last: bool = False,
    tie_seed: int = TIE_SEED,
    content_hash: bool | None = None,
    micro_batch: int | None = None,
) -> RecordResult:
    """Record top-k/bottom-k exemplars and statistics for every unit of ``layers`` over ``data``, and write the
    atlas to ``out``.

    ``layers``: ``LayerInfo`` s (from ``enumerate_units``), or layer names / globs; None: every analysable layer
    of ``types`` but ``exclude`` and (unless ``keep_first_last``) the model's first and last layer.

    ``tie_seed`` seeds the order of samples with equal activations (stored in the config). ``micro_batch``: images
    per forward within a batch (default: ``MICRO_BATCH_CPU`` on a CPU, where a few images at a time keep layer
    outputs in cache, the whole batch on an accelerator); it does not change the result.
    ``channels_last`` (default on) runs conv nets in NHWC, about 1.45x faster for EfficientNet-Lite0 on CPU.
    ``merge_every`` trades memory (units x merge_every floats) for speed of the top-k merge; no setting of
    it, ``batch_size`` or ``checkpoint_every`` changes the result.

    ``content_hash``: fingerprint the dataset (and key its cached embeddings) by each file's bytes, hashed once and
    kept in samples.parquet (True), or by paths and sizes only (False: no file is read for it, but an image replaced
    by another of the same size goes unnoticed). None: as the atlas at ``out`` was recorded, True for a new one.
    Every argument is checked before anything is written.
    """
    check_options(k, spatial, tokens, batch_size, checkpoint_every, merge_every, num_workers)
    out = Path(out).expanduser().resolve()  # 'a/../b' is b: no stray folder 'a' is created on the way
    data = prepare_data(data, model.transform, [out], content_hash, force, progress)
    infos = select_layers(model, layers, types, exclude, keep_first_last)
    config = record_config(model, data, infos, k, spatial, tokens, tie_seed)
    done = completed_result(out, config, force)
    if done is not None:
        return done
    with writing(out, "record"):
        return record_pass([model], data, [out], [infos], [config], k, spatial, tokens, batch_size, device,
                           num_workers, checkpoint_every, merge_every, channels_last, force, progress, micro_batch)[0]


def check_options(k: int, spatial: str, tokens: str, batch_size: int, checkpoint_every: int, merge_every: int,
                  num_workers: int | None) -> None:
    """Refuse a reduction, k, batch size or worker count the record pass cannot use, before any work."""
    if spatial not in SPATIAL or tokens not in TOKENS:
        raise BadInput(f"spatial must be one of {SPATIAL} and tokens one of {TOKENS}")
    for name, value, option in (("k", k, "--k"), ("batch_size", batch_size, "--batch-size"),
                                ("checkpoint_every", checkpoint_every, None), ("merge_every", merge_every, None)):
        if value < 1:
            raise BadInput(f"{name} must be at least 1, got {value}" + (f" ({option})" if option else ""))
    if num_workers is not None and num_workers < 0:
        raise BadInput(f"num_workers must be 0 or more, got {num_workers} (--workers)")


def prepare_data(data: ImageDataset | str, transform, outs: list[Path], content_hash: bool | None, force: bool,
                 progress: bool) -> ImageDataset:
    """The dataset to record into ``outs``, with ``transform`` and its content hashes (files unchanged since an
    atlas at ``outs`` hashed them keep their hash). ``content_hash`` None: as the atlases there were recorded
    (before content hashes: without), True for new ones. A place that cannot be written fails now, not after
    hashing."""
    previous = {out: previous_manifest(out) for out in outs}
    for out, manifest in previous.items():
        if manifest is None or manifest.get("status") != "complete" or force:
            check_writable(out)
    if content_hash is None:
        recorded = {bool(m.get("config", {}).get("content_hash")) for m in previous.values() if m is not None}
        content_hash = True if force or len(recorded) != 1 else recorded.pop()
    data = load_dataset(data, transform) if isinstance(data, str) else data.with_transform(transform)
    data = data.with_content_hash(content_hash)
    if len(data) >= MAX_SAMPLES:
        raise BadInput(f"at most {MAX_SAMPLES - 1} samples per atlas")
    if content_hash:
        known = next((out / SAMPLES for out in outs if (out / SAMPLES).is_file()), None)
        data.hash_contents(known=data.samples if data.hashed else known, progress=progress)
    return data


def select_layers(model: LoadedModel, layers: Sequence[LayerInfo] | Sequence[str] | None, types: Sequence[str],
                  exclude: Sequence[str] | None, keep_first_last: bool) -> list[LayerInfo]:
    """``LayerInfo`` s as given, or the model's layers matching the names / globs (None: every analysable layer
    of ``types`` but ``exclude`` and, unless ``keep_first_last``, the first and last)."""
    if layers is None or all(isinstance(item, str) for item in layers):
        names = [str(item) for item in layers] if layers is not None else None
        return enumerate_units(model.model, types=types, include=names, exclude=exclude,
                               skip_first_last=not keep_first_last)
    return [item for item in layers if isinstance(item, LayerInfo)]
