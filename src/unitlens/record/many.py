"""``record_many(models, data, outs)``: several models recorded in one pass over the data.

Decoding an image costs more than a small model's forward pass, and a study records many models on the same data.
Here each image is read and decoded once (``open_rgb``, in the loader's worker processes); every distinct
preprocessing among the models (models whose transforms are equal share one) turns the decoded image into its
model's input, and each model runs with its own hooks and streaming state. The transforms are the models' own
(PIL resize, crop, normalise), not tensor re-implementations of them, so every model sees exactly the input a
separate ``record`` gives it.

Everything else is ``record``'s own machinery (``unitlens.record.run``): the configuration check of each atlas,
its write lock, checkpoints and resume, and the atlas writing. So each atlas is identical to the one a separate
``record`` run writes (only the timing in its manifest differs), and an interrupted ``record_many`` resumes each
atlas from its own checkpoint, the pass starting at the earliest of them.
"""
from __future__ import annotations

import enum
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.lock import writing
from unitlens.data.datasets import ImageDataset, collate_readable, load_dataset
from unitlens.errors import AtlasError, BadInput
from unitlens.record.defaults import BATCH_SIZE, CHECKPOINT_EVERY, MERGE_EVERY, SPATIAL_DEFAULT, TOKENS_DEFAULT, K
from unitlens.record.run import (
    Recorder,
    RecordResult,
    check_options,
    completed_result,
    loader_workers,
    prepare_out,
    record_config,
    restore_states,
    save_states,
    start_manifest,
    write_atlas,
)
from unitlens.record.state import MAX_SAMPLES
from unitlens.runtime import Progress, pick_device
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import LayerInfo, enumerate_units


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


def collate_all(batch: list[tuple[tuple[torch.Tensor, ...] | None, int]]):
    """Collate ``(inputs per transform | None, id)`` items: (one stacked batch per transform or None when no image
    was readable, ids of the readable ones, ids of the unreadable ones), via ``collate_readable``."""
    readable = [x for x, _ in batch if x is not None]
    if not readable:
        return None, torch.zeros(0, dtype=torch.int64), [i for _, i in batch]
    per_transform = []
    for j in range(len(readable[0])):
        images, ids, failed = collate_readable([(x[j] if x is not None else None, i) for x, i in batch])
        per_transform.append(images)
    return tuple(per_transform), ids, failed


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
    layers: Sequence[list[LayerInfo] | None] | None = None,
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
) -> list[RecordResult]:
    """Record every model of ``models`` on ``data`` into its atlas ``outs[i]`` in one pass over the images.

    ``layers[i]``: the layers of model i (None: its analysable layers but the first and last). The other options
    are ``record``'s and apply to every model. Returns one ``RecordResult`` per model (finished atlases are left
    alone and reported as ``already_complete``; the shared pass's time is every recorded model's ``seconds``).
    """
    check_options(k, spatial, tokens)
    models, outs = list(models), [Path(o) for o in outs]
    layers = list(layers) if layers is not None else [None] * len(models)
    if not models or len(outs) != len(models) or len(layers) != len(models):
        raise BadInput(f"record_many needs one out folder and one layer list per model; got {len(models)} models, "
                       f"{len(outs)} outs, {len(layers)} layer lists")
    resolved = [o.resolve() for o in outs]
    if len(set(resolved)) != len(resolved):
        raise BadInput("two models of record_many write into the same atlas folder; give each its own out")
    data = load_dataset(data) if isinstance(data, str) else data.with_transform(None)
    if len(data) >= MAX_SAMPLES:
        raise BadInput(f"at most {MAX_SAMPLES - 1} samples per atlas")
    layers = [chosen if chosen is not None else enumerate_units(m.model) for m, chosen in zip(models, layers)]
    configs = [record_config(m, data, chosen, k, spatial, tokens) for m, chosen in zip(models, layers)]
    results: list[RecordResult | None] = [completed_result(o, c, force) for o, c in zip(outs, configs)]
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        with ExitStack() as locks:
            for i in todo:
                locks.enter_context(writing(outs[i], "record"))
            recorded = _run([models[i] for i in todo], data, [outs[i] for i in todo], [layers[i] for i in todo],
                            [configs[i] for i in todo], k, spatial, tokens, batch_size, device, num_workers,
                            checkpoint_every, merge_every, channels_last, force, progress)
        for i, result in zip(todo, recorded):
            results[i] = result
    return [r for r in results if r is not None]


def _run(models: list[LoadedModel], data: ImageDataset, outs: list[Path], layers: list[list[LayerInfo]],
         configs: list[dict], k: int, spatial: str, tokens: str, batch_size: int, device, num_workers: int | None,
         checkpoint_every: int, merge_every: int, channels_last: bool, force: bool, progress: bool
         ) -> list[RecordResult]:
    """The shared pass, under every atlas's write lock."""
    device = pick_device(device)
    keys: list[object] = []
    transforms: list[Callable] = []
    group_of: list[int] = []  # model -> index of its transform among the distinct ones
    for m in models:
        key = transform_key(m.transform)
        if key not in keys:
            keys.append(key)
            transforms.append(m.transform)
        group_of.append(keys.index(key))
    nets, recorders, starts, skipped, before, manifests = [], [], [], [], [], []
    for m, out, chosen, config in zip(models, outs, layers, configs):
        resume = prepare_out(out, config, force)
        net = m.model.to(device).eval()
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        recorder = Recorder(net, chosen, k, spatial, tokens, device, merge_every)
        start, done_skipped, elapsed = restore_states(out, resume, recorder, chosen)
        nets.append(net)
        recorders.append(recorder)
        starts.append(start)
        skipped.append(done_skipped)
        before.append(elapsed)
        manifests.append(start_manifest(out, config, chosen, data))
    first = min(starts)
    shared = data.with_transform(AllTransforms(transforms))
    loader = DataLoader(Subset(shared, range(first, len(data))), batch_size=batch_size, shuffle=False,
                        num_workers=loader_workers(num_workers), collate_fn=collate_all,
                        pin_memory=device.type == "cuda")
    position, since_checkpoint, t0 = first, 0, time.perf_counter()

    def checkpoint() -> None:
        for i, recorder in enumerate(recorders):
            if position > starts[i]:
                save_states(outs[i], recorder, position, skipped[i], before[i] + time.perf_counter() - t0)

    bar = Progress(f"recording {len(models)} models", len(data), progress, completed=first, unit="img")
    try:
        with torch.inference_mode():
            for batches, ids, failed in loader:
                for i in failed:
                    warnings.warn(f"skipping unreadable image {data.path(i)}", stacklevel=2)
                    for m, start in enumerate(starts):
                        if i >= start:
                            skipped[m].append(i)
                if batches is not None:
                    ids_on = ids.to(device)
                    inputs = [b.to(device, non_blocking=True) for b in batches]
                    if channels_last:
                        inputs = [b.contiguous(memory_format=torch.channels_last) if b.ndim == 4 else b
                                  for b in inputs]
                    for m, (net, recorder) in enumerate(zip(nets, recorders)):
                        x, model_ids = inputs[group_of[m]], ids_on
                        if starts[m] > int(ids[0]):  # resumed further than the pass: only its own samples
                            keep = ids >= starts[m]
                            if not bool(keep.any()):
                                continue
                            x, model_ids = x[keep.to(device)], ids_on[keep.to(device)]
                        recorder.ids = model_ids
                        net(x)
                n = len(ids) + len(failed)
                position += n
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
    seconds = time.perf_counter() - t0
    results = []
    for m, (out, recorder) in enumerate(zip(outs, recorders)):
        if not recorder.states:
            raise AtlasError(f"no image of {data.spec} could be read ({len(skipped[m])} skipped); nothing was "
                             f"recorded into {out}")
        write_atlas(out, manifests[m], layers[m], recorder.states, data, skipped[m], before[m] + seconds)
        results.append(RecordResult(Atlas(out), len(data), len(skipped[m]), seconds, resumed_from=starts[m],
                                    skipped=[str(data.path(i)) for i in skipped[m]]))
    return results
