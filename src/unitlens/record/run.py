"""``record(model, data, out)``: one forward pass with hooks on every selected layer, written as an atlas.

The run checkpoints its streaming state every ``checkpoint_every`` images (atomically); running the same
call again resumes from the last checkpoint and ends with the same atlas as an uninterrupted run. A
finished atlas is left alone unless ``force=True``.

The pieces of a run are public so that ``record_many`` (one pass over the data for several models) shares them:
``check_options``, ``record_config``, ``completed_result``, ``prepare_out``, ``start_manifest``, ``Recorder``,
``restore_states``, ``save_states``, ``loader_workers`` and ``write_atlas``.
"""
from __future__ import annotations

import json
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import (
    read_json,
    read_tensors,
    write_json,
    write_parquet,
    write_tensors,
)
from unitlens.atlas.layout import (
    CORE,
    EXEMPLARS,
    LOCK,
    MANIFEST,
    RECORD_STATE,
    SAMPLES,
    UNITS,
    clear_derived,
)
from unitlens.atlas.lock import writing
from unitlens.data.datasets import ImageDataset, collate_readable, load_dataset
from unitlens.errors import AtlasError, BadInput
from unitlens.record.defaults import (
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    CONSTANT_EPS,
    MERGE_EVERY,
    SPATIAL,
    SPATIAL_DEFAULT,
    TOKENS,
    TOKENS_DEFAULT,
    K,
)
from unitlens.record.reduce import reduce_output
from unitlens.record.state import MAX_SAMPLES, LayerState
from unitlens.runtime import ForwardHooks, Progress, first_tensor, pick_device
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import LayerInfo, channel_dim_of, enumerate_units


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


def check_options(k: int, spatial: str, tokens: str) -> None:
    """Refuse a reduction or k the record pass does not know, before any work."""
    if spatial not in SPATIAL or tokens not in TOKENS:
        raise BadInput(f"spatial must be one of {SPATIAL} and tokens one of {TOKENS}")
    if k < 1:
        raise BadInput("k must be at least 1")


def record_config(loaded: LoadedModel, data: ImageDataset, layers: list[LayerInfo], k: int, spatial: str,
                  tokens: str) -> dict:
    """Everything that determines the atlas's content; a resume must match it exactly."""
    return {"model": loaded.name, "weights": loaded.weights, "weights_hash": loaded.weights_hash(),
            "dataset": data.spec, "dataset_fingerprint": data.fingerprint(), "n_samples": len(data),
            "layers": [info.name for info in layers], "k": k, "spatial": spatial, "tokens": tokens}


class Recorder:
    """Forward hooks that fold each selected layer's reduced output into its ``LayerState``.

    Set ``ids`` to the batch's sample ids before each forward; ``states`` holds the running state per layer.
    """

    def __init__(self, model: nn.Module, layers: list[LayerInfo], k: int, spatial: str, tokens: str, device,
                 merge_every: int = MERGE_EVERY):
        self.k, self.spatial, self.tokens, self.device = k, spatial, tokens, device
        self.merge_every = merge_every
        self.infos = {info.name: info for info in layers}
        self.states: dict[str, LayerState] = {}
        self.ids: torch.Tensor | None = None
        self.hooks = ForwardHooks(model, self.infos, self._fold)

    def _fold(self, name: str, output) -> None:
        out = first_tensor(output)
        acts = reduce_output(out, channel_dim_of(out, self.infos[name].channel_dim), self.spatial, self.tokens)
        state = self.states.get(name)
        if state is None:
            state = self.states[name] = LayerState(acts.shape[1], self.k, self.device, self.merge_every)
        state.update(acts, self.ids)

    def close(self) -> None:
        self.hooks.remove()


def prepare_out(out: Path, config: dict, force: bool) -> dict | None:
    """Return the saved state metadata to resume from, None to start fresh; raise on a conflicting atlas."""
    manifest_path = out / MANIFEST
    if force and out.exists():
        old_data = read_json(manifest_path).get("config", {}).get("dataset_fingerprint") \
            if manifest_path.is_file() else None
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
    old = read_json(manifest_path).get("config", {})
    if old != config:
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        raise AtlasError(
            f"{out} holds an atlas recorded with another configuration (differs in: {', '.join(diff)}); "
            "use another --out, or --force to overwrite it"
        )
    if (out / RECORD_STATE).is_file():
        from safetensors import safe_open

        with safe_open(str(out / RECORD_STATE), "pt") as f:
            return f.metadata()
    return None


def record(
    model: LoadedModel,
    data: ImageDataset | str,
    out: str | Path,
    layers: list[LayerInfo] | None = None,
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
) -> RecordResult:
    """Record top-k/bottom-k exemplars and statistics for every unit of ``layers`` (default: all analysable
    layers but the first and last) over ``data``, and write the atlas to ``out``.

    ``channels_last`` (default on) runs conv nets in NHWC, about 1.45x faster for EfficientNet-Lite0 on CPU.
    ``merge_every`` trades memory (units x merge_every floats) for speed of the top-k merge; no setting of
    it, ``batch_size`` or ``checkpoint_every`` changes the result.
    """
    check_options(k, spatial, tokens)
    data = load_dataset(data, model.transform) if isinstance(data, str) else data.with_transform(model.transform)
    if len(data) >= MAX_SAMPLES:
        raise BadInput(f"at most {MAX_SAMPLES - 1} samples per atlas")
    layers = layers if layers is not None else enumerate_units(model.model)
    out = Path(out)
    config = record_config(model, data, layers, k, spatial, tokens)
    done = completed_result(out, config, force)
    if done is not None:
        return done
    with writing(out, "record"):
        return _run(model, data, out, layers, config, k, spatial, tokens, batch_size, device, num_workers,
                    checkpoint_every, merge_every, channels_last, force, progress)


def completed_result(out: Path, config: dict, force: bool) -> RecordResult | None:
    """The result of an atlas at ``out`` that is already complete with ``config`` (None: it must be recorded);
    raises if the finished atlas is of another configuration."""
    manifest_path = out / MANIFEST
    if manifest_path.is_file() and read_json(manifest_path).get("status") == "complete" and not force:
        prepare_out(out, config, force=False)  # raises if the finished atlas is of another configuration
        atlas = Atlas(out)
        return RecordResult(atlas, atlas.manifest["n_images"], atlas.manifest["n_skipped"], 0.0,
                            already_complete=True)
    return None


def start_manifest(out: Path, config: dict, layers: list[LayerInfo], data: ImageDataset) -> dict:
    """Write (and return) the manifest of a run in progress: status ``recording``."""
    manifest = {"status": "recording", "config": config, "versions": _versions(),
                "layers": [info.as_dict() for info in layers],
                "dataset": {"spec": data.spec, "fingerprint": config["dataset_fingerprint"], "n": len(data)}}
    write_json(out / MANIFEST, manifest)
    return manifest


def restore_states(out: Path, resume: dict | None, recorder: Recorder, layers: list[LayerInfo]
                   ) -> tuple[int, list[int], float]:
    """Load the saved streaming states of a stopped run into ``recorder``; returns (position to continue from,
    skipped sample ids so far, seconds spent before). A fresh run (``resume`` None) starts at 0."""
    if resume is None:
        return 0, [], 0.0
    saved = read_tensors(out / RECORD_STATE)
    for info in layers:
        recorder.states[info.name] = LayerState.from_state_dict(
            {f: saved[f"{info.name}/{f}"] for f in LayerState.FIELDS}, recorder.k, recorder.device,
            recorder.merge_every)
    return int(resume["position"]), json.loads(resume["skipped"]), float(resume["elapsed_s"])


def save_states(out: Path, recorder: Recorder, position: int, skipped: list[int], elapsed_s: float) -> None:
    """Checkpoint a run atomically: every layer's streaming state, the position reached and the skipped ids."""
    tensors = {f"{name}/{f}": v for name, st in recorder.states.items() for f, v in st.state_dict().items()}
    meta = {"position": str(position), "skipped": json.dumps(skipped), "elapsed_s": str(elapsed_s)}
    write_tensors(out / RECORD_STATE, tensors, meta)


def loader_workers(num_workers: int | None) -> int:
    """Data-loading worker processes: the given number, else half the torch threads (1 to 4)."""
    return num_workers if num_workers is not None else min(4, max(1, (torch.get_num_threads() or 2) // 2))


def _run(model: LoadedModel, data: ImageDataset, out: Path, layers: list[LayerInfo], config: dict, k: int,
         spatial: str, tokens: str, batch_size: int, device, num_workers: int | None, checkpoint_every: int,
         merge_every: int, channels_last: bool, force: bool, progress: bool) -> RecordResult:
    """The record pass proper, under the atlas's write lock."""
    resume = prepare_out(out, config, force)
    device = pick_device(device)
    net = model.model.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    recorder = Recorder(net, layers, k, spatial, tokens, device, merge_every)
    start, skipped, elapsed_before = restore_states(out, resume, recorder, layers)
    manifest = start_manifest(out, config, layers, data)
    loader = DataLoader(Subset(data, range(start, len(data))), batch_size=batch_size, shuffle=False,
                        num_workers=loader_workers(num_workers), collate_fn=collate_readable,
                        pin_memory=device.type == "cuda")
    position, since_checkpoint, t0 = start, 0, time.perf_counter()

    def checkpoint() -> None:
        save_states(out, recorder, position, skipped, elapsed_before + time.perf_counter() - t0)

    bar = Progress("recording", len(data), progress, completed=start, unit="img")
    try:
        with torch.inference_mode():
            for images, ids, failed in loader:
                for i in failed:
                    warnings.warn(f"skipping unreadable image {data.path(i)}", stacklevel=2)
                    skipped.append(i)
                if images is not None:
                    images = images.to(device, non_blocking=True)
                    if channels_last and images.ndim == 4:
                        images = images.contiguous(memory_format=torch.channels_last)
                    recorder.ids = ids.to(device)
                    net(images)
                n = len(ids) + len(failed)
                position += n
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
    seconds = time.perf_counter() - t0
    if not recorder.states:
        raise AtlasError(f"no image of {data.spec} could be read ({len(skipped)} skipped); nothing was recorded")
    write_atlas(out, manifest, layers, recorder.states, data, skipped, elapsed_before + seconds)
    return RecordResult(Atlas(out), len(data), len(skipped), seconds, resumed_from=start,
                        skipped=[str(data.path(i)) for i in skipped])


def write_atlas(out: Path, manifest: dict, layers: list[LayerInfo], states: dict[str, LayerState],
                data: ImageDataset, skipped: list[int], seconds: float) -> None:
    """Write a finished run's exemplars, unit and sample tables and complete manifest; drop its saved state."""
    rows, infos = [], []
    for info in layers:
        st = states[info.name]
        if info.width is None:  # a user-named module: its width is known now
            info = LayerInfo(**{**info.as_dict(), "width": st.width})
        infos.append(info)
        exemplars = st.exemplars()
        write_tensors(out / EXEMPLARS / f"{info.name}.safetensors",
                      {k: v.int() if k.endswith("_ids") else v for k, v in exemplars.items()})
        stats = {k: v.cpu() for k, v in st.stats().items()}
        rows.append(pd.DataFrame({
            "layer": info.name, "unit": range(st.width), "type": info.type, "depth": info.depth,
            "rel_depth": info.rel_depth, "width": st.width, "rel_width": info.rel_width,
            "n": stats["n"].numpy(), "min": stats["min"].numpy(), "max": stats["max"].numpy(),
            "mean": stats["mean"].numpy(), "std": stats["std"].numpy(), "nonfinite": stats["nonfinite"].numpy(),
            "constant": ((stats["max"] - stats["min"]) < CONSTANT_EPS).numpy(),
        }))
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
