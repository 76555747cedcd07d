"""``record_pass``: one pass over a dataset that records one or several models, each into its own atlas.

Decoding an image costs more than a small model's forward pass, and a study records many models on the same data.
So each image is read and decoded once (in the loader's worker processes); every distinct preprocessing among the
models (models whose transforms are equal share one) turns the decoded image into its model's input, and each
model runs with its own hooks and streaming state. The transforms are the models' own (PIL resize, crop,
normalise), not tensor re-implementations of them, so every model sees exactly the input it sees alone.

Each batch is run through every model first and then folded into every model's state and counted, under
``runtime.uninterrupted``: a checkpoint always sits at a batch boundary, and a resumed pass reads every batch
exactly once. A model resumed further than the others only takes the samples past its own checkpoint.
"""
from __future__ import annotations

import enum
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.manifest import RecordConfig
from unitlens.data.datasets import ImageDataset, Unreadable, collate_readable
from unitlens.data.unreadable import UnreadableLog
from unitlens.errors import AtlasError
from unitlens.recording.defaults import MICRO_BATCH_CPU
from unitlens.recording.folder import (
    RecordResult,
    nonfinite_warning,
    prepare_out,
    restore_states,
    save_states,
    start_manifest,
    write_atlas,
)
from unitlens.recording.options import RecordOptions
from unitlens.recording.recorder import Recorder
from unitlens.runtime import Progress, pick_device, prepare_model, uninterrupted
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import LayerInfo


def transform_key(transform: object) -> object:
    """A hashable description of a torchvision/timm transform, equal for equal pipelines (two separately built
    ``Resize(73) -> CenterCrop(64) -> Normalize(...)`` give the same key); any other callable is keyed by identity
    (the same function object is the same preprocessing)."""
    if transform is None or isinstance(transform, (bool, int, float, str)):
        return transform
    if isinstance(transform, torch.Tensor):
        return ("tensor", str(transform.dtype), tuple(transform.shape), tuple(transform.flatten().tolist()))
    if isinstance(transform, (list, tuple)):
        return tuple(transform_key(t) for t in transform)
    if isinstance(transform, dict):
        return tuple(sorted((str(k), transform_key(v)) for k, v in transform.items()))
    if isinstance(transform, (set, frozenset)):
        return ("set", tuple(sorted(repr(transform_key(v)) for v in transform)))
    if isinstance(transform, enum.Enum):
        return (type(transform).__qualname__, transform_key(transform.value))
    module = type(transform).__module__
    if module.startswith(("torchvision.", "timm.")) and hasattr(transform, "__dict__"):
        return (module, type(transform).__qualname__, transform_key(vars(transform)))
    return ("object", id(transform))


class AllTransforms:
    """Apply several transforms to one decoded image: the dataset transform of a shared pass."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image) -> tuple[torch.Tensor, ...]:
        return tuple(t(image) for t in self.transforms)


def collate_all(batch: list[tuple[Any, int]]):
    """Collate ``(inputs per transform | Unreadable, id)`` items like ``collate_readable``: (one stacked batch per
    transform, or None when no image was readable; the ids of the readable ones; ``(id, Unreadable)`` of the
    others)."""
    n = next((len(x) for x, _ in batch if not isinstance(x, Unreadable)), 0)
    if n == 0:
        _, ids, failed = collate_readable(batch)
        return None, ids, failed
    parts = [collate_readable([(x if isinstance(x, Unreadable) else x[j], i) for x, i in batch]) for j in range(n)]
    return tuple(images for images, _, _ in parts), parts[0][1], parts[0][2]


def loader_workers(num_workers: int | None) -> int:
    """Data-loading worker processes: the given number, else half the torch threads (1 to 4)."""
    return num_workers if num_workers is not None else min(4, max(1, (torch.get_num_threads() or 2) // 2))


def record_pass(models: list[LoadedModel], data: ImageDataset, outs: list[Path], layers: list[list[LayerInfo]],
                configs: list[RecordConfig], options: RecordOptions, progress: bool) -> list[RecordResult]:
    """Record ``models[i]`` into ``outs[i]`` (checked, under its write lock) in one pass over ``data``; each
    resumes from its own checkpoint. ``options.micro_batch`` None: ``MICRO_BATCH_CPU`` on a CPU, else the whole
    batch."""
    device = pick_device(options.device)
    k, spatial, tokens, merge_every = options.k, options.spatial, options.tokens, options.merge_every
    channels_last, checkpoint_every, micro_batch = options.channels_last, options.checkpoint_every, options.micro_batch
    if micro_batch is None:
        micro_batch = MICRO_BATCH_CPU if device.type == "cpu" else None
    keys: list[object] = []
    transforms: list[Callable] = []
    group_of: list[int] = []  # model -> index of its transform among the distinct ones
    for model in models:
        key = transform_key(model.transform)
        if key not in keys:
            keys.append(key)
            transforms.append(model.transform)
        group_of.append(keys.index(key))
    nets, recorders, starts, skipped, before, manifests = [], [], [], [], [], []
    for model, out, chosen, config in zip(models, outs, layers, configs):
        resume = prepare_out(out, config, options.force)
        net = prepare_model(model.model, device, channels_last)
        recorder = Recorder(net, chosen, k, spatial, tokens, device, merge_every, config.tie_seed, micro_batch)
        start, done_skipped, elapsed = restore_states(out, resume, recorder)
        nets.append(net)
        recorders.append(recorder)
        starts.append(start)
        skipped.append(done_skipped)
        before.append(elapsed)
        manifests.append(start_manifest(out, config, chosen, data, options))
    first = min(starts)
    shared = data.with_transform(AllTransforms(transforms))
    loader = DataLoader(Subset(shared, range(first, len(data))), batch_size=options.batch_size, shuffle=False,
                        num_workers=loader_workers(options.num_workers), collate_fn=collate_all,
                        pin_memory=device.type == "cuda")
    position, since_checkpoint, t0 = first, 0, time.perf_counter()

    def checkpoint() -> None:
        for i, recorder in enumerate(recorders):
            if position > starts[i]:
                save_states(outs[i], recorder, position, skipped[i], before[i] + time.perf_counter() - t0)

    what = "recording" if len(models) == 1 else f"recording {len(models)} models"
    bar = Progress(what, len(data), progress, completed=first, unit="img")
    unreadable = UnreadableLog()
    try:
        with torch.inference_mode():
            for batches, ids, failed in loader:
                if batches is not None:
                    ids_on = ids.to(device)
                    inputs = [b.to(device, non_blocking=True) for b in batches]
                    if channels_last:
                        inputs = [b.contiguous(memory_format=torch.channels_last) if b.ndim == 4 else b
                                  for b in inputs]
                    for m, (net, recorder) in enumerate(zip(nets, recorders)):
                        x, model_ids = inputs[group_of[m]], ids_on
                        if starts[m] > int(ids[0]):  # resumed further than the pass: only its own samples
                            keep = (ids >= starts[m]).to(device)
                            x, model_ids = x[keep], ids_on[keep]
                        if len(model_ids):
                            recorder.run(net, x, model_ids)
                n = len(ids) + len(failed)
                with uninterrupted():  # the batch is folded into every model and counted, or not at all
                    for m, recorder in enumerate(recorders):
                        recorder.commit()
                        skipped[m].extend(i for i, _ in failed if i >= starts[m])
                    position += n
                for i, why in failed:
                    unreadable.add(i, data.path(i), why)
                since_checkpoint += n
                bar.advance(n)
                if since_checkpoint >= checkpoint_every and position < len(data):
                    checkpoint()
                    since_checkpoint = 0
    except BaseException:
        if position > first:
            checkpoint()
        raise
    finally:
        for recorder in recorders:
            recorder.close()
        bar.close()
    summary = unreadable.summary()
    if summary and len(unreadable) > unreadable.named:
        warnings.warn(summary, stacklevel=3)
    seconds = time.perf_counter() - t0
    results = []
    for m, (out, recorder) in enumerate(zip(outs, recorders)):
        if not recorder.states:
            raise AtlasError(f"no image of {data.spec} could be read ({len(skipped[m])} skipped); nothing was "
                             f"recorded into {out}")
        nonfinite = write_atlas(out, manifests[m], layers[m], recorder.states, data, skipped[m], before[m] + seconds)
        if nonfinite:
            warnings.warn(nonfinite_warning(out, nonfinite), stacklevel=3)
        results.append(RecordResult(Atlas(out), len(data), len(skipped[m]), seconds, resumed_from=starts[m],
                                    skipped=[str(data.path(i)) for i in skipped[m]]))
    return results
