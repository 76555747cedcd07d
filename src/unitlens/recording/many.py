"""``record_many(models, data, outs)``: several models recorded in one pass over the data.

Each image is decoded once and each distinct preprocessing runs once (``passes.record_pass``); everything else is
``record``'s own machinery: the option checks, each atlas's configuration check, its write lock, checkpoints and
resume, and the atlas writing. So each atlas is identical to the one a separate ``record`` run writes (only the
timing in its manifest differs), and an interrupted ``record_many`` resumes each atlas from its own checkpoint, the
pass starting at the earliest of them.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import torch

from unitlens.atlas.lock import writing
from unitlens.data.datasets import ImageDataset
from unitlens.errors import BadInput
from unitlens.recording.defaults import (
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    MERGE_EVERY,
    SPATIAL_DEFAULT,
    TIE_SEED,
    TOKENS_DEFAULT,
    K,
)
from unitlens.recording.folder import RecordResult, completed_result, record_config
from unitlens.recording.passes import record_pass
from unitlens.recording.run import check_options, prepare_data, select_layers
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import LAYER_TYPES, LayerInfo


def estimate_bytes(model: LoadedModel, layers: list[LayerInfo], k: int = K, merge_every: int = MERGE_EVERY) -> int:
    """Rough memory a model needs in a shared pass: its weights and the streaming state of its units (keys,
    merge buffer and scratch); activations of one batch are not counted."""
    weights = sum(t.numel() * t.element_size() for t in model.model.state_dict().values())
    units = sum(info.width or 0 for info in layers)
    return int(weights + units * (2 * k * 8 + merge_every * 12 + 2 * (k + merge_every) * 8))


def record_many(
    models: Sequence[LoadedModel],
    data: ImageDataset | str,
    outs: Sequence[str | Path],
    layers: Sequence[Sequence[LayerInfo] | Sequence[str] | None] | None = None,
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
) -> list[RecordResult]:
    """Record every model of ``models`` on ``data`` into its atlas ``outs[i]`` in one pass over the images.

    ``layers[i]``: the layers of model i, as ``record`` takes them (None: chosen by ``types``, ``exclude`` and
    ``keep_first_last``). The other options are ``record``'s and apply to every model. Returns one
    ``RecordResult`` per model (finished atlases are left alone and reported as ``already_complete``; the
    shared pass's time is every recorded model's ``seconds``).
    """
    check_options(k, spatial, tokens, batch_size, checkpoint_every, merge_every, num_workers)
    models = list(models)
    outs_ = [Path(o).expanduser().resolve() for o in outs]
    chosen = list(layers) if layers is not None else [None] * len(models)
    if not models or len(outs_) != len(models) or len(chosen) != len(models):
        raise BadInput(f"record_many needs one out folder and one layer list per model; got {len(models)} models, "
                       f"{len(outs_)} outs, {len(chosen)} layer lists")
    if len(set(outs_)) != len(outs_):
        raise BadInput("two models of record_many write into the same atlas folder; give each its own out")
    data = prepare_data(data, None, outs_, content_hash, force, progress)
    infos = [select_layers(m, c, types, exclude, keep_first_last) for m, c in zip(models, chosen)]
    configs = [record_config(m, data, i, k, spatial, tokens, tie_seed) for m, i in zip(models, infos)]
    results: list[RecordResult | None] = [completed_result(o, c, force) for o, c in zip(outs_, configs)]
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        with ExitStack() as locks:
            for i in todo:
                locks.enter_context(writing(outs_[i], "record"))
            recorded = record_pass([models[i] for i in todo], data, [outs_[i] for i in todo], [infos[i] for i in todo],
                                   [configs[i] for i in todo], k, spatial, tokens, batch_size, device, num_workers,
                                   checkpoint_every, merge_every, channels_last, force, progress, micro_batch)
        for i, result in zip(todo, recorded):
            results[i] = result
    return [r for r in results if r is not None]
