"""``embed_units``: concept examples of every unit, their embeddings (cached per image and crop), θ per unit,
written to the atlas's lens store.

θ_k = mean of the normalised embeddings of unit k's m concept examples (the SemanticLens paper's eq. 2; not
re-normalised on disk, so ‖θ_k‖ keeps how consistent the examples are; every cosine uses θ_k/‖θ_k‖).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unitlens import notebook
from unitlens.atlas.atlas import Atlas
from unitlens.atlas.lock import check_writable
from unitlens.backends import Backend, as_backend, require_embeddings
from unitlens.backends.cache import EmbeddingCache
from unitlens.errors import AtlasIncomplete
from unitlens.lens.crops import CropContext, crop_examples
from unitlens.lens.examples import ConceptExamples, select_examples
from unitlens.lens.options import EmbedOptions
from unitlens.lens.probes import dataset_null
from unitlens.lens.store import LayerLens, LensStore
from unitlens.options import takes_options
from unitlens.runtime import channels_last_mode


@dataclass
class EmbedResult:
    """What ``embed_units`` did: the store it wrote, the layers embedded and skipped, and the work done."""

    store: LensStore
    embedded: list[str]
    skipped: list[str]  # already embedded with the same settings
    n_examples: int = 0  # (image, crop) keys the embedded layers use
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    options: EmbedOptions | None = None

    def layers(self) -> Any:
        """One row per embedded layer: units, distinct concept examples, cropped examples, m and crop."""
        import pandas as pd

        metas = {n: self.store.layer_meta(n) for n in self.embedded}
        return pd.DataFrame([{"layer": n, "units": meta["units"], "examples": meta["n_distinct_examples"],
                              "cropped": meta["n_cropped"], "m": meta["m"], "crop": meta["crop"]}
                             for n, meta in metas.items()], columns=["layer", "units", "examples", "cropped", "m",
                                                                    "crop"])

    def _repr_html_(self) -> str:
        facts = {"backend": self.store.backend, "store": self.store.path, "embedded": len(self.embedded),
                 "skipped (same settings)": ", ".join(self.skipped) or "none",
                 "newly embedded examples": self.cache_misses, "from the cache": self.cache_hits,
                 "seconds": f"{self.seconds.get('total', 0.0):.1f}"}
        return notebook.header("lens embedding", facts) + notebook.table(self.layers(), "embedded layers") + \
            "".join(f"<div><i>{notebook.escape(n)}</i></div>" for n in self.notes)


def _unit_constant(atlas: Atlas, layer: str, n_units: int) -> torch.Tensor:
    """The units the lens leaves out: constant ones and those that met NaN or inf (their exemplars are no ranking)."""
    units = atlas.units()
    rows = units[units["layer"] == layer].sort_values("unit")
    const = torch.zeros(n_units, dtype=torch.bool)
    flags = torch.tensor(rows["constant"].to_numpy(dtype=bool) | (rows["nonfinite"].to_numpy() > 0))
    const[torch.tensor(rows["unit"].to_numpy(), dtype=torch.int64)] = flags
    return const


def _layer_lens(ex: ConceptExamples, vectors: torch.Tensor, constant: torch.Tensor) -> LayerLens:
    """Deduplicate the (image, crop) keys of a layer and build its LayerLens from their embeddings (flat order)."""
    ids, crops = ex.keys()
    slot: dict[tuple, int] = {}
    rows: list[int] = []
    positions: list[int] = []
    for pos, key in enumerate(zip(ids, crops)):
        if key not in slot:
            slot[key] = len(rows)
            rows.append(pos)
        positions.append(slot[key])
    unique_vectors = vectors[torch.tensor(rows, dtype=torch.int64)] if rows else torch.empty(0, vectors.shape[1])
    U, m = ex.ids.shape
    example_index = torch.full((U * m,), -1, dtype=torch.int64)
    example_index[ex.mask.reshape(-1)] = torch.tensor(positions, dtype=torch.int64)
    example_index = example_index.reshape(U, m)
    E = unique_vectors[example_index.clamp_min(0)] * ex.mask[..., None]
    theta = E.sum(1) / ex.mask.sum(1, keepdim=True).clamp_min(1)
    return LayerLens(layer=ex.layer, theta=theta.float(), ids=ex.ids, vals=ex.vals, mask=ex.mask, boxes=ex.boxes,
                     has_box=ex.has_box, example_index=example_index, example_vectors=unique_vectors.float(),
                     constant=constant)


@takes_options(EmbedOptions)
def embed_units(atlas: Atlas | str | Path, backend: Backend | str | None = None, options: EmbedOptions | None = None,
                *, model: Any = None, progress: bool = True) -> EmbedResult:
    """Embed the concept examples of every unit of the chosen layers and store θ and the vector table.

    Each unit's m most activating samples (cropped as ``crop`` says) are embedded in one cached pass over all
    layers: every (image, crop) is embedded once per backend and atlas. A layer already embedded with the same
    backend, m, crop and threshold is skipped unless ``force``.

    Parameters
    ----------
    atlas
        The atlas (a path or an ``Atlas``); its record run must have finished.
    backend
        The embedding backend: a name or a ``Backend`` instance; overrides ``options.backend``.
    options
        An ``EmbedOptions``; any of its fields may also be given as a keyword argument (see below).
    model
        The analysed model as a ``LoadedModel``, for crops that run it (``activation``, ``relevance``); loaded
        from the atlas's manifest when None.
    progress
        Show progress bars.

    Returns
    -------
    EmbedResult
        The lens store written (``.store``), the layers embedded and those skipped, the cache hits and seconds.

    Examples
    --------
    >>> embed_units("atlas/lite0-demo", m=30, crop="activation", layers=["blocks.6.*"])  # doctest: +SKIP
    """
    options = options or EmbedOptions()
    t0 = time.perf_counter()
    atlas = Atlas.open(atlas)
    if not atlas.complete:
        raise AtlasIncomplete(f"the record run of {atlas.path} has not finished; it has no exemplars to embed yet")
    check_writable(atlas.path, fix="copy the atlas to a writable place to embed it")  # before loading anything
    with atlas.writing("lens embed"):
        names = [info.name for info in atlas.select_layers(list(options.layers) if options.layers else None)]
        backend = as_backend(options.backend if backend is None else backend, options.device)
        require_embeddings(backend, "the lens (unit vectors are means of example embeddings)")
        options = options.replace(backend=backend.name)  # as stored: the name of the backend used
        m, crop, threshold = options.m, options.crop, options.crop_threshold
        t_load = time.perf_counter()
        store = LensStore(atlas, backend.name, dim=backend.dim, create=True)
        if store.weights_id != backend.weights_id:
            store.reset(backend.weights_id)  # embedded with other weights under this name: none of it is valid now
        done = store.meta.get("layers", {})
        todo, skipped = [], []
        for name in names:
            old = done.get(name)
            if not options.force and old and old.get("m") == m and old.get("crop") == crop and \
                    old.get("threshold", threshold) == threshold:
                skipped.append(name)
            else:
                todo.append(name)
        result = EmbedResult(store, todo, skipped, options=options)
        result.seconds["backend"] = t_load - t0
        if store.null_image() is None or options.force:
            t = time.perf_counter()
            vec, ids = dataset_null(atlas, backend, progress=progress)
            store.path.mkdir(parents=True, exist_ok=True)
            store.write_null_image(vec, ids)
            result.seconds["null"] = time.perf_counter() - t
        if not todo:
            result.seconds["total"] = time.perf_counter() - t0
            return result
        t_ex = time.perf_counter()
        examples = {name: select_examples(atlas, name, m) for name in todo}
        t1 = time.perf_counter()
        context = CropContext(atlas, model=model, device=options.device, batch_size=options.crop_batch_size,
                              threshold=threshold, progress=progress)
        with channels_last_mode(options.channels_last):  # the crops that run the model (activation, relevance)
            examples = crop_examples(context, examples, crop)
        result.notes.extend(context.notes)
        t2 = time.perf_counter()
        cache = EmbeddingCache(atlas, backend)
        flat_ids: list[int] = []
        flat_crops: list = []
        spans: dict[str, tuple[int, int]] = {}
        for name in todo:
            layer_ids, layer_crops = examples[name].keys()
            spans[name] = (len(flat_ids), len(flat_ids) + len(layer_ids))
            flat_ids += layer_ids
            flat_crops += layer_crops
        result.n_examples = len(set(zip(flat_ids, flat_crops)))
        hits0, misses0 = cache.hits, cache.misses
        vectors = cache.get(flat_ids, flat_crops, batch_size=options.batch_size, progress=progress)
        result.cache_hits, result.cache_misses = cache.hits - hits0, cache.misses - misses0
        t3 = time.perf_counter()
        for name in todo:
            ex = examples[name]
            a, b = spans[name]
            data = _layer_lens(ex, vectors[a:b], _unit_constant(atlas, name, ex.ids.shape[0]))
            store.write_layer(data, {"units": int(ex.ids.shape[0]), "m": int(ex.m), "m_requested": m, "crop": crop,
                                     "threshold": threshold, "n_distinct_examples": int(data.example_vectors.shape[0]),
                                     "n_cropped": int(ex.has_box.sum()), "options": options.as_dict()})
        t4 = time.perf_counter()
        result.seconds.update({"examples": t1 - t_ex, "crop": t2 - t1, "embed": t3 - t2, "write": t4 - t3,
                               "total": t4 - t0})
        return result
