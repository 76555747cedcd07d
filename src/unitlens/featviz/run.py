"""``featviz_atlas(atlas, layers=..., units=...)``: feature visualisations of an atlas's units, stored in the atlas.

The objective is the unit as the atlas recorded it: the record pass's reduction of a channel (the atlas's
``spatial`` / ``tokens`` configuration), or for a derived layer ``L::NAME`` the basis feature as ``unitlens basis
record`` computed it. Everything is checked before any optimisation — the layers are in the atlas, the units in
their layers, the model loads with the recorded weights, every layer passes a gradient to the image, and layers
already holding visualisations of other options need ``force`` — then the units are made in batches
(``featviz.render.Renderer``) and every finished batch is stored (``featviz.store``), so a run that stops resumes
with the next unit not yet stored. A layer's images next to the unit's most and least activating natural images'
activations say how far beyond the dataset the optimisation drove the unit.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from unitlens.atlas import Atlas
from unitlens.atlas.lock import check_writable
from unitlens.basis.store import load_basis
from unitlens.errors import BadInput
from unitlens.featviz.normalization import input_normalization
from unitlens.featviz.objectives import BasisReader, ChannelReader, UnitReader
from unitlens.featviz.options import FeatvizOptions
from unitlens.featviz.render import Renderer, batches_of, table_rows, unit_targets
from unitlens.featviz.selection import choose_units
from unitlens.featviz.store import FeatvizStore, image_file
from unitlens.options import takes_options
from unitlens.runtime import Progress, uninterrupted


@dataclass
class FeatvizRun:
    """What ``featviz_atlas`` did: per layer the units made now and those already stored, and the time taken."""

    made: dict[str, list[int]] = field(default_factory=dict)
    stored: dict[str, list[int]] = field(default_factory=dict)
    options: FeatvizOptions | None = None
    seconds: float = 0.0

    @property
    def units_per_s(self) -> float:
        n = sum(len(u) for u in self.made.values())
        return n / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame([{"layer": layer, "made": len(units), "already stored": len(self.stored[layer])}
                             for layer, units in self.made.items()])


def atlas_readers(atlas: Atlas, layers: Sequence[str]) -> dict[str, UnitReader]:
    """The reader of every layer: its channels reduced as the atlas recorded them, or its basis's features."""
    config = atlas.manifest.config
    spatial, tokens = config.spatial, config.tokens
    readers: dict[str, UnitReader] = {}
    for layer in layers:
        info = atlas.layer(layer)
        if layer in atlas.derived_layers:
            basis = load_basis(atlas, layer)
            parent = atlas.layer(basis.layer)
            readers[layer] = BasisReader(basis.layer, basis.encoder, basis.positions, parent.channel_dim, spatial,
                                         tokens)
        else:
            readers[layer] = ChannelReader(layer, info.channel_dim, info.width, spatial, tokens)
    return readers


def _stored_units(table: pd.DataFrame, per_side: int) -> set[int]:
    counts = table.groupby("unit").size()
    return {int(u) for u, n in counts.items() if n >= 2 * per_side}


def _describer(bar: Progress, label: str, steps: int) -> Callable[[int], None]:
    """A step callback that shows the step on the progress bar."""
    def describe(step: int) -> None:
        bar.describe(f"{label} (step {step}/{steps})")
    return describe


@takes_options(FeatvizOptions)
def featviz_atlas(atlas: Atlas | str | Path, units: str | Sequence[int] | None = None, *, options: FeatvizOptions,
                  model: Any = None, progress: bool = True) -> FeatvizRun:
    """Make and store the feature visualisations of ``units`` (default ``options.units``, else all) of
    ``options.layers`` of ``atlas`` (see the module docstring); returns what was made.

    ``model``: the atlas's model as a ``LoadedModel`` (default: loaded from the manifest, weights hash checked).
    """
    t0 = time.perf_counter()
    atlas = Atlas.open(atlas)
    atlas.require_complete()
    if not options.layers:
        raise BadInput(f"name the layers to visualise: --layers (atlas {atlas.path} has "
                       f"{', '.join(i.name for i in atlas.layers[:8])}{', ...' if len(atlas.layers) > 8 else ''})")
    infos = atlas.select_layers(list(options.layers))
    check_writable(atlas.path, fix="copy the atlas to a writable place")
    spec = units if units is not None else options.units
    counts = atlas.units().groupby("layer").size()
    chosen = {info.name: choose_units(spec, int(info.width or counts.get(info.name, 0)), info.name) for info in infos}
    readers = atlas_readers(atlas, list(chosen))
    loaded = model if model is not None else atlas.load_model()
    mean, std = input_normalization(loaded.transform)
    renderer = Renderer(loaded.model, readers, options, mean, std)
    opts = renderer.options
    key = opts.render_key()
    store = FeatvizStore(atlas)
    for layer in chosen:
        width, recorded = renderer.check(layer), atlas.layer(layer).width
        if recorded and width != recorded:
            raise BadInput(f"layer {layer}: the model gives {width} units now, the atlas recorded {recorded}; pass "
                           "the model the atlas was recorded with")
        if store.has(layer) and not opts.force and store.meta(layer).get("options") != key:
            old = store.meta(layer).get("options", {})
            differ = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in key.items() if old.get(k) != v)
            raise BadInput(f"layer {layer} of atlas {atlas.path} holds visualisations made with other options "
                           f"({differ}); run with the same options to add units, or --force to make them again")
    run = FeatvizRun(options=opts)
    with atlas.writing("featviz"):
        todo: dict[str, list[int]] = {}
        for layer, units_of in chosen.items():
            if opts.force:
                store.clear(layer)
            done = _stored_units(store.table(layer), opts.per_side) if store.has(layer) else set()
            run.stored[layer] = [u for u in units_of if u in done]
            todo[layer] = [u for u in units_of if u not in done]
            run.made[layer] = []
        with Progress("featviz", sum(len(u) for u in todo.values()), progress, unit="unit") as bar:
            for layer, units_of in todo.items():
                if not units_of:
                    continue
                ex = atlas.exemplars(layer)
                if not store.has(layer):
                    store.start(layer, {"options": key, "mean": list(mean), "std": list(std), "seconds": 0.0,
                                        "model": atlas.manifest.config.model})
                spent = float(store.meta(layer).get("seconds", 0.0))
                for group in batches_of(units_of, opts.per_side, renderer.batch_size):
                    t1 = time.perf_counter()
                    targets = unit_targets(layer, group, opts.per_side)
                    label = f"featviz {layer}"
                    bar.describe(label)
                    images, reached = renderer.render(targets, on_step=_describer(bar, label, renderer.steps))
                    rows = table_rows(targets, reached, opts.seed)
                    unit_ids = torch.tensor(rows["unit"].tolist())
                    rows["natural_top"] = ex.top_vals[unit_ids, 0].double().numpy()
                    rows["natural_bottom"] = ex.bottom_vals[unit_ids, 0].double().numpy()
                    rows["file"] = [image_file(t.unit, t.direction, t.index) for t in targets]
                    spent += time.perf_counter() - t1
                    with uninterrupted():  # a batch is stored whole or not at all
                        store.add(layer, rows, images)
                        store.update_meta(layer, seconds=round(spent, 3))
                    run.made[layer] += group
                    bar.advance(len(group))
    run.seconds = time.perf_counter() - t0
    return run
