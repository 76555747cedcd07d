"""``record_probe``: the probe pass, the activation of every unit of some layers on every image of a labelled
probe set, reduced per image exactly as the atlas's record pass reduced it (``reduce_output`` with the
atlas's spatial and token pooling), stored in the atlas as units x images.

Images go through the atlas model's own transform, so probe images of any size are resized and cropped as the
model expects. The pass holds the atlas's write lock, stops each forward after the deepest probed layer, and
refuses, before loading the model, a set whose units x images exceed ``max_activations``. Its options are
``ProbeOptions`` (``unitlens.probe.options``).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from unitlens import notebook
from unitlens.atlas import Atlas
from unitlens.errors import AtlasError, BadInput
from unitlens.options import takes_options
from unitlens.probe.options import ProbeOptions
from unitlens.probe.spec import ProbeSpec, load_probe_spec
from unitlens.probe.store import ProbeStore
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

    def _repr_html_(self) -> str:
        facts = {"images": self.n_images, "concepts": len(self.store.concepts), "units": self.n_units,
                 "layers": ", ".join(self.store.layers), "seconds": round(self.seconds, 1),
                 "unreadable images skipped": len(self.skipped), "stored in": self.store.path}
        return notebook.header(f"probe set '{self.store.name}'", facts)


@takes_options(ProbeOptions)
def record_probe(atlas: Atlas | str | Path, data: str | Path | ProbeSpec, options: ProbeOptions | None = None, *,
                 model: Any = None, progress: bool = True) -> ProbeResult:
    """Run the probe pass of ``data`` on the chosen layers of ``atlas`` and store it as probe set ``options.name``.

    Parameters
    ----------
    atlas
        The atlas (a path or an ``Atlas``); its record run must be complete.
    data
        A probe set: a folder of concept folders, a CSV with a path column and concept columns (``options.columns``
        picks them), or a ``ProbeSpec``.
    options
        A ``ProbeOptions``; any of its fields may also be given as a keyword argument (see below). Layers default
        to every recorded layer of the model; derived layers are left out (naming one is an error).
    model
        The analysed model as a ``LoadedModel`` (default: the atlas's, loaded from its manifest).
    progress
        Show a progress bar.

    Returns
    -------
    ProbeResult
        The probe set's store, images and units probed, seconds, unreadable images skipped.
    """
    options = options or ProbeOptions()
    atlas = Atlas.open(atlas)
    atlas.require_complete()
    store = ProbeStore(atlas, options.name)
    spec = data if isinstance(data, ProbeSpec) else load_probe_spec(data, list(options.columns)
                                                                    if options.columns else None)
    infos = atlas.select_layers(list(options.layers) if options.layers else None, derived=False)
    config = atlas.manifest.config
    spatial = options.spatial or config.spatial
    tokens = config.tokens
    n_units = sum(int(info.width or 0) for info in infos)
    bound = options.max_activations
    if n_units * len(spec) > bound:
        raise BadInput(f"the probe pass would hold {n_units:,} units x {len(spec):,} images = "
                       f"{n_units * len(spec):,} activations, over the bound of {bound:,} "
                       f"({bound * 4 / 2**30:.2g} GiB of float32); probe fewer --layers or fewer images, "
                       "or raise --max-activations if the memory is there")
    loaded = model if model is not None else atlas.load_model()
    device = pick_device(options.device)
    net = prepare_model(loaded.model, device, options.channels_last)
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
            Progress(f"probe {options.name}", len(spec), progress, unit="img") as bar:
        for ids, x, _sizes in load_batches(dataset, range(len(spec)), loaded.transform, options.batch_size, device,
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
                    {"spatial": spatial, "tokens": tokens, "columns": options.as_dict()["columns"],
                     "skipped": skipped, "seconds": round(seconds, 3), "model": loaded.name,
                     "options": options.as_dict()})
    return ProbeResult(store, len(kept), sum(int(a.shape[0]) for a in activations.values()), seconds, skipped)
