"""``record(model, data, out)``: one forward pass with hooks on every selected layer, written as an atlas.

The run checkpoints its streaming state every ``checkpoint_every`` images (atomically); running the same
call again resumes from the last checkpoint and ends with the same atlas as an uninterrupted run. A
finished atlas is left alone unless ``force=True``.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from unitlens.atlas.atlas import Atlas, AtlasError
from unitlens.atlas.files import read_json, read_tensors, write_json, write_parquet, write_tensors
from unitlens.data.datasets import ImageDataset, collate_readable, load_dataset
from unitlens.record.reduce import SPATIAL, TOKENS, channel_dim_of, reduce_output
from unitlens.record.state import MAX_SAMPLES, LayerState
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import LayerInfo, enumerate_units

CONSTANT_EPS = 1e-8
STATE_FILE = "record_state.safetensors"


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
            tokens: str) -> dict:
    """Everything that determines the atlas's content; a resume must match it exactly."""
    return {"model": loaded.name, "weights": loaded.weights, "weights_hash": loaded.weights_hash(),
            "dataset": data.spec, "dataset_fingerprint": data.fingerprint(), "n_samples": len(data),
            "layers": [info.name for info in layers], "k": k, "spatial": spatial, "tokens": tokens}


class _Recorder:
    """Forward hooks that fold each selected layer's reduced output into its ``LayerState``."""

    def __init__(self, model: nn.Module, layers: list[LayerInfo], k: int, spatial: str, tokens: str, device,
                 merge_every: int = 512):
        self.layers, self.k, self.spatial, self.tokens, self.device = layers, k, spatial, tokens, device
        self.merge_every = merge_every
        self.states: dict[str, LayerState] = {}
        self.ids: torch.Tensor | None = None
        modules = dict(model.named_modules())
        self.handles = [modules[info.name].register_forward_hook(self._hook(info)) for info in layers]

    def _hook(self, info: LayerInfo):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            acts = reduce_output(out, channel_dim_of(out, info.channel_dim), self.spatial, self.tokens)
            state = self.states.get(info.name)
            if state is None:
                state = self.states[info.name] = LayerState(acts.shape[1], self.k, self.device, self.merge_every)
            state.update(acts, self.ids)
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _prepare_out(out: Path, config: dict, force: bool) -> dict | None:
    """Return the saved state metadata to resume from, None to start fresh; raise on a conflicting atlas."""
    manifest_path = out / "manifest.json"
    if force and out.exists():
        old_data = read_json(manifest_path).get("config", {}).get("dataset_fingerprint") \
            if manifest_path.is_file() else None
        for name in ("manifest.json", "units.parquet", "samples.parquet", "scores.parquet", STATE_FILE):
            (out / name).unlink(missing_ok=True)
        # results derived from the old exemplars go; cached image embeddings stay if the images are the same
        derived = ["exemplars", "lens", "relevance", "audit"] + \
            ([] if old_data == config["dataset_fingerprint"] else ["embeddings"])
        for folder in derived:
            shutil.rmtree(out / folder, ignore_errors=True)
        return None
    if not manifest_path.is_file():
        if out.exists() and any(out.iterdir()):
            raise AtlasError(f"{out} exists and is not an atlas; choose another --out or empty it")
        return None
    old = read_json(manifest_path).get("config", {})
    if old != config:
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        raise AtlasError(
            f"{out} holds an atlas recorded with another configuration (differs in: {', '.join(diff)}); "
            "use another --out, or --force to overwrite it"
        )
    if (out / STATE_FILE).is_file():
        from safetensors import safe_open

        with safe_open(str(out / STATE_FILE), "pt") as f:
            return f.metadata()
    return None


def record(
    model: LoadedModel,
    data: ImageDataset | str,
    out: str | Path,
    layers: list[LayerInfo] | None = None,
    k: int = 200,
    spatial: str = "mean",
    tokens: str = "mean",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    checkpoint_every: int = 2048,
    merge_every: int = 512,
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
    if spatial not in SPATIAL or tokens not in TOKENS:
        raise ValueError(f"spatial must be one of {SPATIAL} and tokens one of {TOKENS}")
    if k < 1:
        raise ValueError("k must be at least 1")
    data = load_dataset(data, model.transform) if isinstance(data, str) else data.with_transform(model.transform)
    if len(data) >= MAX_SAMPLES:
        raise ValueError(f"at most {MAX_SAMPLES - 1} samples per atlas")
    layers = layers if layers is not None else enumerate_units(model.model)
    out = Path(out)
    config = _config(model, data, layers, k, spatial, tokens)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and read_json(manifest_path).get("status") == "complete" and not force:
        _prepare_out(out, config, force=False)  # raises if the finished atlas is of another configuration
        atlas = Atlas(out)
        return RecordResult(atlas, atlas.manifest["n_images"], atlas.manifest["n_skipped"], 0.0,
                            already_complete=True)
    resume = _prepare_out(out, config, force)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = model.model.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    recorder = _Recorder(net, layers, k, spatial, tokens, device, merge_every)
    start, skipped, elapsed_before = 0, [], 0.0
    if resume is not None:
        saved = read_tensors(out / STATE_FILE)
        for info in layers:
            recorder.states[info.name] = LayerState.from_state_dict(
                {f: saved[f"{info.name}/{f}"] for f in LayerState.FIELDS}, k, device, merge_every)
        start, skipped = int(resume["position"]), json.loads(resume["skipped"])
        elapsed_before = float(resume["elapsed_s"])
    manifest = {"status": "recording", "config": config, "versions": _versions(),
                "layers": [info.as_dict() for info in layers],
                "dataset": {"spec": data.spec, "fingerprint": config["dataset_fingerprint"], "n": len(data)}}
    write_json(manifest_path, manifest)
    workers = num_workers if num_workers is not None else min(4, max(1, (torch.get_num_threads() or 2) // 2))
    loader = DataLoader(Subset(data, range(start, len(data))), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=collate_readable, pin_memory=device.type == "cuda")
    position, since_checkpoint, t0 = start, 0, time.perf_counter()

    def checkpoint() -> None:
        tensors = {f"{name}/{f}": v for name, st in recorder.states.items() for f, v in st.state_dict().items()}
        meta = {"position": str(position), "skipped": json.dumps(skipped),
                "elapsed_s": str(elapsed_before + time.perf_counter() - t0)}
        write_tensors(out / STATE_FILE, tensors, meta)

    bar = _progress(progress, len(data), start)
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
    _write_atlas(out, manifest, layers, recorder.states, data, skipped, elapsed_before + seconds)
    return RecordResult(Atlas(out), len(data), len(skipped), seconds, resumed_from=start,
                        skipped=[str(data.path(i)) for i in skipped])


def _write_atlas(out: Path, manifest: dict, layers: list[LayerInfo], states: dict[str, LayerState],
                 data: ImageDataset, skipped: list[int], seconds: float) -> None:
    rows, infos = [], []
    for info in layers:
        st = states[info.name]
        if info.width is None:  # a user-named module: its width is known now
            info = LayerInfo(**{**info.as_dict(), "width": st.width})
        infos.append(info)
        exemplars = st.exemplars()
        write_tensors(out / "exemplars" / f"{info.name}.safetensors",
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
    write_parquet(out / "units.parquet", units)
    samples = data.samples.copy()
    samples["skipped"] = samples["id"].isin(set(skipped))
    write_parquet(out / "samples.parquet", samples)
    manifest.update({
        "status": "complete", "layers": [i.as_dict() for i in infos], "n_images": len(data),
        "n_skipped": len(skipped), "n_units": len(units), "n_constant": int(units["constant"].sum()),
        "seconds": round(seconds, 3),
    })
    write_json(out / "manifest.json", manifest)
    (out / STATE_FILE).unlink(missing_ok=True)


class _NoBar:
    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class _RichBar:
    """A rich progress bar with this run's images/s."""

    def __init__(self, total: int, done: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("recording"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
        self.task = self.progress.add_task("record", total=total, completed=done, rate="")
        self.t0, self.seen = time.perf_counter(), 0
        self.progress.start()

    def advance(self, n: int) -> None:
        self.seen += n
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=n, rate=f"{rate:7.1f} img/s")

    def close(self) -> None:
        self.progress.stop()


def _progress(enabled: bool, total: int, done: int):
    return _RichBar(total, done) if enabled else _NoBar()
