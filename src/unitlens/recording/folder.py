"""The atlas folder of a record run: its configuration (a resume must match it), the manifest, the checkpoints
of the streaming state, and the finished atlas's files. ``record`` and ``record_many`` write through these."""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import pandas as pd
import torch

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import read_tensor_metadata, read_tensors, write_parquet, write_tensors
from unitlens.atlas.layout import CORE, LOCK, MANIFEST, RECORD_STATE, SAMPLES, UNITS, clear_derived, exemplar_path
from unitlens.atlas.manifest import DatasetRecord, Manifest, RecordConfig
from unitlens.data.datasets import ImageDataset
from unitlens.errors import AtlasError, CorruptFile
from unitlens.recording.defaults import CONSTANT_EPS
from unitlens.recording.options import RecordOptions
from unitlens.recording.recorder import Recorder
from unitlens.recording.state import LayerState
from unitlens.zoo.factory import LoadedModel
from unitlens.zoo.units import LayerInfo

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


def versions() -> dict:
    """The library versions a run used (kept in its manifest)."""
    import timm

    from unitlens import __version__

    return {"unitlens": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version()}


def record_config(loaded: LoadedModel, data: ImageDataset, layers: list[LayerInfo],
                  options: RecordOptions) -> RecordConfig:
    """Everything that determines the atlas's content; a resume must match it exactly."""
    return RecordConfig(
        model=loaded.name, weights=loaded.weights, seed=loaded.seed, weights_hash=loaded.weights_hash(),
        model_options=dict(loaded.options or {}),  # what Atlas.load_model passes on
        dataset=data.spec, dataset_fingerprint=data.fingerprint(), content_hash=data.content_hash,
        n_samples=len(data), layers=tuple(info.name for info in layers), k=options.k, spatial=options.spatial,
        tokens=options.tokens, tie_seed=options.tie_seed)


def previous_manifest(out: Path) -> Manifest | None:
    """The manifest of the atlas already at ``out`` (None: none there, or it is unreadable)."""
    try:
        return Manifest.read(out) if (out / MANIFEST).is_file() else None
    except CorruptFile:
        return None


def prepare_out(out: Path, config: RecordConfig, force: bool) -> dict | None:
    """Return the saved state metadata to resume from, None to start fresh; raise on a conflicting atlas."""
    manifest_path = out / MANIFEST
    if force and out.exists():
        previous = previous_manifest(out)
        old_data = previous.config.dataset_fingerprint if previous else None
        for name in CORE:
            path = out / name
            if path.is_dir():
                for file in path.iterdir():
                    file.unlink()
            else:
                path.unlink(missing_ok=True)
        # results derived from the old exemplars go; cached image embeddings stay if the images are the same
        clear_derived(out, images_changed=old_data != config.dataset_fingerprint)
        return None
    if not manifest_path.is_file():
        if out.exists() and any(p.name != LOCK for p in out.iterdir()):
            raise AtlasError(f"{out} exists and is not an atlas; choose another --out or empty it")
        return None
    old = Manifest.read(out, fix=FIX_MANIFEST).config
    if old != config:
        diff = [f.name for f in fields(config) if getattr(old, f.name) != getattr(config, f.name)]
        raise AtlasError(
            f"{out} holds an atlas recorded with another configuration (differs in: {', '.join(diff)}); "
            "use another --out, or --force to overwrite it"
        )
    if (out / RECORD_STATE).is_file():
        return read_tensor_metadata(out / RECORD_STATE, fix=FIX_STATE)
    return None


def completed_result(out: Path, config: RecordConfig, force: bool) -> RecordResult | None:
    """The result of the atlas at ``out`` if it is complete with ``config`` (None: it must be recorded); raises if
    the finished atlas is of another configuration. ``force``: never complete."""
    previous = previous_manifest(out)
    if force or previous is None or not previous.complete:
        return None
    prepare_out(out, config, force=False)  # raises if the finished atlas is of another configuration
    atlas = Atlas(out)
    return RecordResult(atlas, atlas.manifest.n_images or 0, atlas.manifest.n_skipped or 0, 0.0,
                        already_complete=True)


def start_manifest(out: Path, config: RecordConfig, layers: list[LayerInfo], data: ImageDataset,
                   options: RecordOptions) -> Manifest:
    """Write (and return) the manifest of a run in progress (status ``recording``) and its samples table, whose
    content hashes a resumed run reuses. The manifest keeps the run's options (``options.record``)."""
    manifest = Manifest(status="recording", config=config, options={"record": options.as_dict()},
                        versions=versions(), layers=tuple(layers),
                        dataset=DatasetRecord(spec=data.spec, fingerprint=config.dataset_fingerprint, n=len(data),
                                              root=str(data.root)))
    manifest.write(out)
    write_parquet(out / SAMPLES, data.samples)
    return manifest


def restore_states(out: Path, resume: dict | None, recorder: Recorder) -> tuple[int, list[int], float]:
    """Load the saved streaming states of a stopped run (``resume``: its checkpoint metadata) into ``recorder``;
    returns (position to continue from, skipped sample ids so far, seconds spent before). None: a fresh start."""
    if resume is None:
        return 0, [], 0.0
    saved = read_tensors(out / RECORD_STATE, fix=FIX_STATE)
    for name in recorder.infos:
        recorder.states[name] = LayerState.from_state_dict(
            {f: saved[f"{name}/{f}"] for f in LayerState.FIELDS}, recorder.k, recorder.device, recorder.merge_every,
            recorder.tie_seed)
    return int(resume["position"]), json.loads(resume["skipped"]), float(resume["elapsed_s"])


def save_states(out: Path, recorder: Recorder, position: int, skipped: list[int], elapsed_s: float) -> None:
    """Checkpoint a run atomically: every layer's streaming state, the position reached and the skipped ids."""
    tensors = {f"{name}/{f}": v for name, st in recorder.states.items() for f, v in st.state_dict().items()}
    meta = {"position": str(position), "skipped": json.dumps(skipped), "elapsed_s": str(elapsed_s)}
    write_tensors(out / RECORD_STATE, tensors, meta)


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
    """The ``units.parquet`` rows of one recorded layer: its statistics, constant flags and tie counts.

    A unit that met NaN or inf (``nonfinite`` > 0) is never ``constant``: its range is not known, and a unit that
    is NaN everywhere (min inf, max -inf) would otherwise pass for one."""
    stats = {k: v.cpu() for k, v in state.stats().items()}
    return pd.DataFrame({
        "layer": info.name, "unit": range(state.width), "type": info.type, "depth": info.depth,
        "rel_depth": info.rel_depth, "width": state.width, "rel_width": info.rel_width,
        "n": stats["n"].numpy(), "min": stats["min"].numpy(), "max": stats["max"].numpy(),
        "mean": stats["mean"].numpy(), "std": stats["std"].numpy(), "nonfinite": stats["nonfinite"].numpy(),
        "constant": ((stats["nonfinite"] == 0) & ((stats["max"] - stats["min"]) < CONSTANT_EPS)).numpy(),
        "top_tied": tied_at_boundary(exemplars["top_vals"]).cpu().numpy(),
        "bottom_tied": tied_at_boundary(exemplars["bottom_vals"]).cpu().numpy(),
    })


def write_atlas(out: Path, manifest: Manifest, layers: list[LayerInfo], states: dict[str, LayerState],
                data: ImageDataset, skipped: list[int], seconds: float) -> dict[str, int]:
    """Write a finished run's exemplars, unit and sample tables and complete manifest; drop its saved state.
    Returns the layers with non-finite units and how many each has."""
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
    replace(manifest, status="complete", layers=tuple(infos), n_images=len(data), n_skipped=len(skipped),
            seconds=round(seconds, 3)).counted(units).write(out)
    (out / RECORD_STATE).unlink(missing_ok=True)
    bad = units[units["nonfinite"] > 0].groupby("layer", sort=False).size()
    return {str(layer): int(n) for layer, n in bad.items()}


def nonfinite_warning(out: Path, layers: dict[str, int]) -> str:
    """The one warning of a record pass that met NaN or inf: which layers, how many units, what happens to them."""
    listed = ", ".join(f"{layer} ({n})" for layer, n in list(layers.items())[:10])
    more = f" and {len(layers) - 10} more layers" if len(layers) > 10 else ""
    return (f"{out}: NaN or inf activations in {sum(layers.values())} unit(s) of layer(s) {listed}{more}; they are "
            "counted as non-finite (units.parquet's nonfinite column), not as constant, and left out of MIS and "
            "the lens")
