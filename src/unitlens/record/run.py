"""``record(model, data, out)``: one forward pass with hooks on every selected layer, written as an atlas.

The run checkpoints its streaming state every ``checkpoint_every`` images (atomically); running the same
call again resumes from the last checkpoint and ends with the same atlas as an uninterrupted run. A
finished atlas is left alone unless ``force=True``.
"""
from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import (
    read_json,
    read_tensor_metadata,
    read_tensors,
    write_json,
    write_parquet,
    write_tensors,
)
from unitlens.atlas.layout import (
    CORE,
    LOCK,
    MANIFEST,
    RECORD_STATE,
    SAMPLES,
    UNITS,
    clear_derived,
    exemplar_path,
)
from unitlens.atlas.lock import check_writable, writing
from unitlens.data.datasets import ImageDataset, collate_readable, load_dataset
from unitlens.data.unreadable import UnreadableLog
from unitlens.errors import AtlasError, BadInput, CorruptFile
from unitlens.record.defaults import (
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    CONSTANT_EPS,
    MERGE_EVERY,
    MICRO_BATCH_CPU,
    SPATIAL,
    SPATIAL_DEFAULT,
    TIE_SEED,
    TOKENS,
    TOKENS_DEFAULT,
    K,
)
from unitlens.record.reduce import input_affine, mean_from_input, reduce_output
from unitlens.record.state import MAX_SAMPLES, LayerState
from unitlens.runtime import (
    ForwardHooks,
    Progress,
    first_tensor,
    named_modules,
    pick_device,
    prepare_model,
    uninterrupted,
)
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import LAYER_TYPES, LayerInfo, channel_dim_of, enumerate_units

FIX_MANIFEST = "record the atlas again with --force (or choose another --out)"
FIX_STATE = f"delete it to start the run over from the first image, or record again with --force ({RECORD_STATE})"


@dataclass
class RecordResult:
    """What a record call did: the atlas, counts and speed of this call."""

    atlas: Atlas
    n_images: int
    n_skipped: int
    seconds: float
    resumed_from: int = 0
    already_complete: bool = False
    skipped: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return (self.n_images - self.resumed_from) / self.seconds if self.seconds > 0 else float("nan")


def _versions() -> dict:
    import timm

    from unitlens import __version__

    return {"unitlens": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version()}


def _config(loaded: LoadedModel, data: ImageDataset, layers: list[LayerInfo], k: int, spatial: str,
            tokens: str, tie_seed: int) -> dict:
    """Everything that determines the atlas's content; a resume must match it exactly."""
    return {"model": loaded.name, "weights": loaded.weights, "seed": loaded.seed,
            "weights_hash": loaded.weights_hash(),
            **({"model_options": loaded.options} if loaded.options else {}),  # what Atlas.load_model passes on
            "dataset": data.spec, "dataset_fingerprint": data.fingerprint(), "content_hash": data.content_hash,
            "n_samples": len(data), "layers": [info.name for info in layers], "k": k, "spatial": spatial,
            "tokens": tokens, "tie_seed": tie_seed}


def _previous_manifest(out: Path) -> dict | None:
    """The manifest of the atlas already at ``out`` (None: none there, or it is unreadable)."""
    try:
        return read_json(out / MANIFEST) if (out / MANIFEST).is_file() else None
    except CorruptFile:
        return None


class Recorder:
    """Forward hooks that reduce each selected layer's output; ``commit()`` folds a whole batch into every layer's
    ``LayerState`` once the forward has finished.

    ``run(net, images, ids)`` stages one batch; ``states`` holds the running state per layer. A forward that stops
    half-way (Ctrl-C, an error in a later layer) folds nothing, so a saved state always sits at a batch boundary
    and a resumed run reads every batch exactly once. ``micro_batch`` runs the forward on slices of the batch: on
    a CPU a few images at a time keep each layer's output in cache for the layers (and the hook) that read it
    next; the staged slices are folded together, so the result does not depend on it.
    """

    def __init__(self, model: nn.Module, layers: list[LayerInfo], k: int, spatial: str, tokens: str, device,
                 merge_every: int = MERGE_EVERY, tie_seed: int = TIE_SEED, micro_batch: int | None = None):
        self.k, self.spatial, self.tokens, self.device = k, spatial, tokens, device
        self.merge_every, self.tie_seed, self.micro_batch = merge_every, tie_seed, micro_batch
        self.infos = {info.name: info for info in layers}
        self.states: dict[str, LayerState] = {}
        self.ids = torch.empty(0, dtype=torch.int64)  # the sample ids of the batch being staged
        self.rows = 0  # images in the forward running now (a slice of the batch)
        self.staged: dict[str, list[torch.Tensor]] = {}  # this batch's reduced activations, until commit()
        self.affine = {}  # layers whose output means follow from their (smaller) input's means
        if spatial == "mean" and tokens == "mean":
            for name, module in named_modules(model, self.infos).items():
                affine = input_affine(module)
                if affine is not None:
                    self.affine[name] = affine
        self.hooks = ForwardHooks(model, self.infos, self._stage, with_inputs=True)

    def _stage(self, name: str, inputs, output) -> None:
        out = first_tensor(output)
        info = self.infos[name]
        affine = self.affine.get(name)
        x = inputs[0] if inputs else None
        try:
            if affine is not None and out.ndim > 2 and torch.is_tensor(x) and x.numel() < out.numel():
                acts = mean_from_input(x, channel_dim_of(x, info.channel_dim), affine, batch=self.rows)
            else:
                acts = reduce_output(out, channel_dim_of(out, info.channel_dim, info.width), self.spatial,
                                     self.tokens, batch=self.rows)
        except BadInput as err:  # name the layer and how to leave it out
            raise BadInput(f"layer {name} (output {tuple(out.shape)}): {err}; leave it out with --exclude "
                           f"'{name}' (Python: exclude=[...])") from err
        self.staged.setdefault(name, []).append(acts)

    def run(self, net: nn.Module, images: torch.Tensor, ids: torch.Tensor) -> None:
        """The forward over a batch (in slices of ``micro_batch`` images); its activations are staged, not folded."""
        self.staged.clear()
        self.ids = ids
        step = self.micro_batch or len(images) or 1
        for start in range(0, len(images), step):
            part = images[start:start + step]
            self.rows = len(part)
            net(part)

    def commit(self) -> None:
        """Fold the staged batch into every layer's state (call inside ``runtime.uninterrupted``)."""
        for name, parts in self.staged.items():
            acts = parts[0] if len(parts) == 1 else torch.cat(parts)
            state = self.states.get(name)
            if state is None:
                state = self.states[name] = LayerState(acts.shape[1], self.k, self.device, self.merge_every,
                                                       self.tie_seed)
            try:
                state.update(acts, self.ids)
            except BadInput as err:
                raise BadInput(f"layer {name}: {err}; leave it out with --exclude '{name}' (Python: "
                               "exclude=[...])") from err
        self.staged.clear()

    def close(self) -> None:
        self.hooks.remove()


def _prepare_out(out: Path, config: dict, force: bool) -> dict | None:
    """Return the saved state metadata to resume from, None to start fresh; raise on a conflicting atlas."""
    manifest_path = out / MANIFEST
    if force and out.exists():
        old_data = (_previous_manifest(out) or {}).get("config", {}).get("dataset_fingerprint")
        for name in CORE:
            path = out / name
            if path.is_dir():
                for file in path.iterdir():
                    file.unlink()
            else:
                path.unlink(missing_ok=True)
        # results derived from the old exemplars go; cached image embeddings stay if the images are the same
        clear_derived(out, images_changed=old_data != config["dataset_fingerprint"])
        return None
    if not manifest_path.is_file():
        if out.exists() and any(p.name != LOCK for p in out.iterdir()):
            raise AtlasError(f"{out} exists and is not an atlas; choose another --out or empty it")
        return None
    old = {"content_hash": False, **read_json(manifest_path, fix=FIX_MANIFEST).get("config", {})}
    if old != config:
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        raise AtlasError(
            f"{out} holds an atlas recorded with another configuration (differs in: {', '.join(diff)}); "
            "use another --out, or --force to overwrite it"
        )
    if (out / RECORD_STATE).is_file():
        return read_tensor_metadata(out / RECORD_STATE, fix=FIX_STATE)
    return None


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
    if spatial not in SPATIAL or tokens not in TOKENS:
        raise BadInput(f"spatial must be one of {SPATIAL} and tokens one of {TOKENS}")
    for name, value, option in (("k", k, "--k"), ("batch_size", batch_size, "--batch-size"),
                                ("checkpoint_every", checkpoint_every, None), ("merge_every", merge_every, None)):
        if value < 1:
            raise BadInput(f"{name} must be at least 1, got {value}" + (f" ({option})" if option else ""))
    if num_workers is not None and num_workers < 0:
        raise BadInput(f"num_workers must be 0 or more, got {num_workers} (--workers)")
    out = Path(out).expanduser().resolve()  # 'a/../b' is b: no stray folder 'a' is created on the way
    previous = _previous_manifest(out)
    if previous is None or previous.get("status") != "complete" or force:
        check_writable(out)  # a file or a read-only place fails now, not after hashing and loading
    if content_hash is None:  # as the atlas there was recorded (before content hashes: without), else hashed
        content_hash = True if force or previous is None else bool(previous.get("config", {}).get("content_hash"))
    data = load_dataset(data, model.transform) if isinstance(data, str) else data.with_transform(model.transform)
    data = data.with_content_hash(content_hash)
    if len(data) >= MAX_SAMPLES:
        raise BadInput(f"at most {MAX_SAMPLES - 1} samples per atlas")
    if content_hash:  # unchanged files keep the hash recorded for them
        data.hash_contents(known=data.samples if data.hashed else out / SAMPLES, progress=progress)
    if layers is None or all(isinstance(item, str) for item in layers):
        names = [str(item) for item in layers] if layers is not None else None
        infos = enumerate_units(model.model, types=types, include=names, exclude=exclude,
                                skip_first_last=not keep_first_last)
    else:
        infos = [item for item in layers if isinstance(item, LayerInfo)]
    config = _config(model, data, infos, k, spatial, tokens, tie_seed)
    if previous is not None and previous.get("status") == "complete" and not force:
        _prepare_out(out, config, force=False)  # raises if the finished atlas is of another configuration
        atlas = Atlas(out)
        return RecordResult(atlas, atlas.manifest["n_images"], atlas.manifest["n_skipped"], 0.0,
                            already_complete=True)
    with writing(out, "record"):
        return _run(model, data, out, infos, config, k, spatial, tokens, batch_size, device, num_workers,
                    checkpoint_every, merge_every, channels_last, force, progress, micro_batch)


def _run(model: LoadedModel, data: ImageDataset, out: Path, layers: list[LayerInfo], config: dict, k: int,
         spatial: str, tokens: str, batch_size: int, device, num_workers: int | None, checkpoint_every: int,
         merge_every: int, channels_last: bool, force: bool, progress: bool,
         micro_batch: int | None = None) -> RecordResult:
    """The record pass proper, under the atlas's write lock."""
    manifest_path = out / MANIFEST
    resume = _prepare_out(out, config, force)
    device = pick_device(device)
    net = prepare_model(model.model, device, channels_last)
    if micro_batch is None:
        micro_batch = MICRO_BATCH_CPU if device.type == "cpu" else None
    recorder = Recorder(net, layers, k, spatial, tokens, device, merge_every, config["tie_seed"], micro_batch)
    start, skipped, elapsed_before = 0, [], 0.0
    if resume is not None:
        saved = read_tensors(out / RECORD_STATE, fix=FIX_STATE)
        for info in layers:
            recorder.states[info.name] = LayerState.from_state_dict(
                {f: saved[f"{info.name}/{f}"] for f in LayerState.FIELDS}, k, device, merge_every, config["tie_seed"])
        start, skipped = int(resume["position"]), json.loads(resume["skipped"])
        elapsed_before = float(resume["elapsed_s"])
    manifest = {"status": "recording", "config": config, "versions": _versions(),
                "layers": [info.as_dict() for info in layers],
                "dataset": {"spec": data.spec, "fingerprint": config["dataset_fingerprint"], "n": len(data)}}
    write_json(manifest_path, manifest)
    write_parquet(out / SAMPLES, data.samples)  # the content hashes, reused if this run stops and is resumed
    workers = num_workers if num_workers is not None else min(4, max(1, (torch.get_num_threads() or 2) // 2))
    loader = DataLoader(Subset(data, range(start, len(data))), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate_readable, pin_memory=device.type == "cuda")
    position, since_checkpoint, t0 = start, 0, time.perf_counter()

    def checkpoint() -> None:
        tensors = {f"{name}/{f}": v for name, st in recorder.states.items() for f, v in st.state_dict().items()}
        meta = {"position": str(position), "skipped": json.dumps(skipped),
                "elapsed_s": str(elapsed_before + time.perf_counter() - t0)}
        write_tensors(out / RECORD_STATE, tensors, meta)

    bar = Progress("recording", len(data), progress, completed=start, unit="img")
    unreadable = UnreadableLog()
    try:
        with torch.inference_mode():
            for images, ids, failed in loader:
                if images is not None:
                    images = images.to(device, non_blocking=True)
                    if channels_last and images.ndim == 4:
                        images = images.contiguous(memory_format=torch.channels_last)
                    recorder.run(net, images, ids.to(device))
                n = len(ids) + len(failed)
                with uninterrupted():  # the batch is folded into every layer and counted, or not at all
                    recorder.commit()
                    skipped.extend(i for i, _ in failed)
                    position += n
                for i, why in failed:
                    unreadable.add(i, data.path(i), why)
                since_checkpoint += n
                bar.advance(n)
                if since_checkpoint >= checkpoint_every and position < len(data):
                    checkpoint()
                    since_checkpoint = 0
    except BaseException:
        if position > start:
            checkpoint()
        raise
    finally:
        recorder.close()
        bar.close()
    summary = unreadable.summary()
    if summary and len(unreadable) > unreadable.named:
        warnings.warn(summary, stacklevel=2)
    seconds = time.perf_counter() - t0
    if not recorder.states:
        raise AtlasError(f"no image of {data.spec} could be read ({len(skipped)} skipped); nothing was recorded")
    _write_atlas(out, manifest, layers, recorder.states, data, skipped, elapsed_before + seconds)
    return RecordResult(Atlas(out), len(data), len(skipped), seconds, resumed_from=start,
                        skipped=[str(data.path(i)) for i in skipped])


def tied_at_boundary(values: torch.Tensor) -> torch.Tensor:
    """Per unit, how many of its (C, k) exemplars share the value of its last (k-th) one, or 0 when only that one
    has it: the exemplars the seeded tie-break chose among equal samples (all k for a dead ReLU unit)."""
    if values.shape[1] == 0:
        return torch.zeros(values.shape[0], dtype=torch.int64)
    count = (values == values[:, -1:]).sum(1)
    return torch.where(count > 1, count, 0)


def exemplar_tensors(exemplars: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A layer's exemplars (``LayerState.exemplars()``) as an atlas stores them (``exemplars/<layer>.safetensors``;
    ids as int32)."""
    return {k: v.int() if k.endswith("_ids") else v for k, v in exemplars.items()}


def unit_rows(info: LayerInfo, state: LayerState, exemplars: dict[str, torch.Tensor]) -> pd.DataFrame:
    """The ``units.parquet`` rows of one recorded layer: its statistics, constant flags and tie counts."""
    stats = {k: v.cpu() for k, v in state.stats().items()}
    return pd.DataFrame({
        "layer": info.name, "unit": range(state.width), "type": info.type, "depth": info.depth,
        "rel_depth": info.rel_depth, "width": state.width, "rel_width": info.rel_width,
        "n": stats["n"].numpy(), "min": stats["min"].numpy(), "max": stats["max"].numpy(),
        "mean": stats["mean"].numpy(), "std": stats["std"].numpy(), "nonfinite": stats["nonfinite"].numpy(),
        "constant": ((stats["max"] - stats["min"]) < CONSTANT_EPS).numpy(),
        "top_tied": tied_at_boundary(exemplars["top_vals"]).cpu().numpy(),
        "bottom_tied": tied_at_boundary(exemplars["bottom_vals"]).cpu().numpy(),
    })


def _write_atlas(out: Path, manifest: dict, layers: list[LayerInfo], states: dict[str, LayerState],
                 data: ImageDataset, skipped: list[int], seconds: float) -> None:
    rows, infos = [], []
    for info in layers:
        st = states[info.name]
        if info.width is None:  # a user-named module: its width is known now
            info = LayerInfo(**{**info.as_dict(), "width": st.width})
        infos.append(info)
        exemplars = st.exemplars()
        write_tensors(exemplar_path(out, info.name), exemplar_tensors(exemplars))
        rows.append(unit_rows(info, st, exemplars))
    units = pd.concat(rows, ignore_index=True)
    write_parquet(out / UNITS, units)
    samples = data.samples.copy()
    samples["skipped"] = samples["id"].isin(set(skipped))
    write_parquet(out / SAMPLES, samples)
    manifest.update({
        "status": "complete", "layers": [i.as_dict() for i in infos], "n_images": len(data),
        "n_skipped": len(skipped), "n_units": len(units), "n_constant": int(units["constant"].sum()),
        "seconds": round(seconds, 3),
    })
    write_json(out / MANIFEST, manifest)
    (out / RECORD_STATE).unlink(missing_ok=True)
