"""``probe_atlas``: the probe pass, the activation of every unit of some layers on every image of a labelled
probe set, reduced per image exactly as the atlas's record pass reduced it (``reduce_output`` with the
atlas's spatial and token pooling), stored in the atlas as units x images.

Images go through the atlas model's own transform, so probe images of any size are resized and cropped as the
model expects. The pass holds the atlas's write lock, stops each forward after the deepest probed layer, and
refuses, before loading the model, a set whose units x images exceed ``max_activations``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unitlens.atlas import Atlas
from unitlens.errors import AtlasError, BadInput
from unitlens.probe.defaults import BATCH_SIZE, MAX_ACTIVATIONS, PROBE_NAME
from unitlens.probe.spec import ProbeSpec, load_probe_spec
from unitlens.probe.store import ProbeStore
from unitlens.recording.defaults import SPATIAL
from unitlens.recording.reduce import reduce_output
from unitlens.runtime import OutputCapture, Progress, pick_device, prepare_model
from unitlens.zoo.units import channel_dim_of


@dataclass
class ProbeResult:
    store: ProbeStore
    n_images: int
    n_units: int
    seconds: float
    skipped: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("nan")


def probe_atlas(atlas, data: str | Path | ProbeSpec, layers=None, name: str = PROBE_NAME,
                columns: list[str] | None = None, model=None, spatial: str | None = None,
                batch_size: int = BATCH_SIZE, device=None, max_activations: int = MAX_ACTIVATIONS,
                progress: bool = True) -> ProbeResult:
    """Run the probe pass of ``data`` (a probe spec path or ``ProbeSpec``) on ``layers`` of ``atlas`` (names or
    globs; default: every recorded layer; derived layers are left out, naming one is an error) and store it as
    probe set ``name``.

    ``model``: the analysed model as a ``LoadedModel`` (default: the atlas's, from its manifest). ``spatial``:
    ``mean`` or ``max`` pooling of conv maps (default: the atlas's own).
    """
    atlas = Atlas.open(atlas)
    atlas.require_complete()
    store = ProbeStore(atlas, name)
    spec = data if isinstance(data, ProbeSpec) else load_probe_spec(data, columns)
    infos = atlas.select_layers(layers, derived=False)  # the model's own modules: a basis's features have none
    config = atlas.manifest.get("config", {})
    spatial = spatial or config.get("spatial", "mean")
    tokens = config.get("tokens", "mean")
    if spatial not in SPATIAL:
        raise BadInput(f"spatial pooling must be one of {', '.join(SPATIAL)}")
    if batch_size < 1:
        raise BadInput(f"batch size must be at least 1, got {batch_size}")
    n_units = sum(int(info.width or 0) for info in infos)
    if n_units * len(spec) > max_activations:
        raise BadInput(f"the probe pass would hold {n_units:,} units x {len(spec):,} images = "
                       f"{n_units * len(spec):,} activations, over the bound of {max_activations:,} "
                       f"({max_activations * 4 / 2**30:.2g} GiB of float32); probe fewer --layers or fewer images, "
                       "or raise --max-activations if the memory is there")
    loaded = model if model is not None else atlas.load_model()
    device = pick_device(device)
    net = prepare_model(loaded.model, device)
    from unitlens.data.datasets import ImageDataset
    from unitlens.data.loading import load_batches

    dataset = ImageDataset(pd.DataFrame({"path": [str(p) for p in spec.paths]}), spec.source)
    names = [info.name for info in infos]
    by_name = {info.name: info for info in infos}
    rows: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    kept: list[int] = []
    skipped: list[str] = []

    def skip(i: int, path: Path, err: Exception) -> None:
        warnings.warn(f"skipping unreadable probe image {path}: {err}", stacklevel=2)
        skipped.append(str(path))

    t0 = time.perf_counter()
    with atlas.writing("probe"), torch.inference_mode(), OutputCapture(net, names) as capture, \
            Progress(f"probe {name}", len(spec), progress, unit="img") as bar:
        for ids, x, _sizes in load_batches(dataset, range(len(spec)), loaded.transform, batch_size, device,
                                           skipped=skip):
            outputs = capture.run(x)
            for n in names:
                out = outputs[n]
                rows[n].append(reduce_output(out, channel_dim_of(out, by_name[n].channel_dim), spatial, tokens)
                               .float().cpu())
            kept.extend(ids)
            bar.advance(len(ids))
        bar.advance(len(skipped))
        if not kept:
            raise AtlasError(f"no image of probe set {spec.source} could be read ({len(skipped)} skipped)")
        activations = {n: torch.cat(rows[n]).T.contiguous() for n in names}  # (U, N)
        keep = np.asarray(kept)
        membership = spec.membership[keep]
        seconds = time.perf_counter() - t0
        store.write(spec, [spec.paths[i] for i in kept], membership, activations,
                    {"spatial": spatial, "tokens": tokens, "columns": columns, "skipped": skipped,
                     "seconds": round(seconds, 3), "model": loaded.name})
    return ProbeResult(store, len(kept), sum(int(a.shape[0]) for a in activations.values()), seconds, skipped)
