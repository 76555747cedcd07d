"""``score_featviz(atlas)``: MIS with feature visualisations as the explanations (the MIS paper, appendix D).

The tasks are the natural-exemplar MIS tasks of the same units (N per unit, the same queries: the natural images
at ranks N·K + i of the most and least activating exemplars), but every task shows the unit's first K stored
visualisations that drive it up as E⁺ and the first K that drive it down as E⁻ instead of natural exemplars:
s(q, E) = mean over e ∈ E of cos(q, e), Δ± = s(q±, E⁺) − s(q±, E⁻), p = σ((Δ⁺ − Δ⁻) / τ), MIS = mean of p
(``mis.scoring.score_embeddings``). Queries are embedded through the atlas's embedding cache; the visualisations
through the same backend, kept in ``featviz/<layer>/embeddings/<backend>.safetensors`` (keyed by image file and the
backend's weights). Scores go to ``scores.parquet`` as metrics ``mis_featviz`` and ``mis_featviz_accuracy`` beside
the natural-exemplar ``mis``; units without visualisations get no row, constant and non-finite ones a missing value.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from unitlens.atlas import Atlas
from unitlens.atlas.files import read_tensor_metadata, read_tensors, write_tensors
from unitlens.atlas.layout import backend_dirname
from unitlens.atlas.lock import check_writable
from unitlens.backends import EmbeddingCache, as_backend
from unitlens.backends.base import Backend
from unitlens.backends.cache import embed_images
from unitlens.errors import BadInput, CorruptFile, NotComputed
from unitlens.featviz.defaults import METRIC, METRIC_ACCURACY
from unitlens.featviz.store import FeatvizStore
from unitlens.mis.options import MISOptions
from unitlens.mis.scoring import STATUS_SCORED, mis_params, score_embeddings, scores_rows, unit_status
from unitlens.mis.tasks import check_dataset, check_exemplars, task_layout
from unitlens.options import takes_options


@dataclass
class FeatvizMIS:
    """What ``score_featviz`` did: one row per visualised unit, and its counts and timings."""

    frame: pd.DataFrame
    backend: str
    params: dict
    images_embedded: int = 0
    seconds: dict = field(default_factory=dict)


def visualisation_embeddings(store: FeatvizStore, layer: str, files: list[str], backend: Backend,
                             progress: bool = True, keep: bool = True) -> tuple[torch.Tensor, int]:
    """L2-normalised embeddings (n, D) of a layer's stored images ``files`` and how many were embedded now; the
    rest come from the layer's cache for this backend (same name and weights), which ``keep`` extends."""
    path = store.folder(layer) / "embeddings" / f"{backend_dirname(backend.name)}.safetensors"
    known: dict[str, torch.Tensor] = {}
    weights = getattr(backend, "weights_id", "")
    if path.is_file():
        try:
            meta = read_tensor_metadata(path)
            if meta.get("backend") == backend.name and meta.get("weights_id", "") == weights:
                vectors = read_tensors(path)["vectors"]
                known = dict(zip(json.loads(meta["files"]), vectors))
        except (CorruptFile, KeyError, ValueError):
            known = {}  # a damaged cache is made again
    missing = [f for f in dict.fromkeys(files) if f not in known]
    if missing:
        made = embed_images(backend, [store.image(layer, f) for f in missing], progress=progress)
        known.update(zip(missing, F.normalize(made.float(), dim=-1)))
        if keep:
            names = list(known)
            write_tensors(path, {"vectors": torch.stack([known[f] for f in names]).contiguous()},
                          {"backend": backend.name, "weights_id": weights, "files": json.dumps(names)})
    return torch.stack([known[f] for f in files]), len(missing)


def _explanations(table: pd.DataFrame, units: np.ndarray, k_expl: int) -> tuple[list[str], list[str]]:
    """The files of the first ``k_expl`` top and bottom images of every unit, unit-major."""
    pos, neg = [], []
    by = {key: g.sort_values("index")["file"].tolist()[:k_expl]
          for key, g in table.groupby(["unit", "direction"], sort=False)}
    for u in units:
        pos += by[(int(u), "top")]
        neg += by[(int(u), "bottom")]
    return pos, neg


@takes_options(MISOptions)
def score_featviz(atlas: Atlas | str | Path, options: MISOptions | None = None, *,
                  backend: Backend | str | None = None, progress: bool = True) -> FeatvizMIS:
    """MIS of every visualised unit of the layers that have feature visualisations (or of ``layers``), with the
    visualisations as explanations and natural exemplars as queries (see the module docstring).

    A layer named in ``layers`` without visualisations is ``NotComputed`` (naming the command); visualisations
    with fewer than ``k_expl`` images per side, and datasets too small for the queries, are refused before any
    embedding, as for natural-exemplar MIS.

    Parameters
    ----------
    atlas
        The atlas (or its folder), with visualisations made by ``featviz_atlas``.
    options
        The ``MISOptions`` (the same as natural-exemplar MIS; ``explanations`` is taken as ``"featviz"``);
        keyword arguments override its fields.
    backend
        A ``Backend`` instance, or a backend name; default ``options.backend``.
    progress
        Show progress bars.

    Returns
    -------
    FeatvizMIS
        One row per visualised unit (metrics ``mis_featviz``, ``mis_featviz_accuracy``), counts and timings.
    """
    assert options is not None  # takes_options always passes them
    options = options.replace(explanations="featviz")
    n_tasks, k_expl, tau, write, device = options.n_tasks, options.k_expl, options.tau, options.write, options.device
    layers = list(options.layers) if options.layers is not None else None
    t0 = time.perf_counter()
    atlas = Atlas.open(atlas)
    store = FeatvizStore(atlas)
    if write:
        check_writable(atlas.path, fix=f"score without writing: unitlens mis {atlas.path} --explanations featviz "
                                       "--no-write (Python: write=False), or copy the atlas to a writable place")
    stored = store.layers()
    if layers is None:
        if not stored:
            raise NotComputed(f"atlas {atlas.path} has no feature visualisations yet; make them first: unitlens "
                              f"featviz {atlas.path} --layers NAMES")
        names = stored
    else:
        names = [info.name for info in atlas.select_layers(layers)]
        lacking = [n for n in names if n not in stored]
        if lacking:
            raise NotComputed(f"layer(s) {', '.join(lacking)} of atlas {atlas.path} have no feature visualisations; "
                              f"make them first: unitlens featviz {atlas.path} --layers '{','.join(lacking)}'")
    manifest = atlas.manifest
    n_readable = (manifest.n_images or 0) - (manifest.n_skipped or 0)
    shared = check_dataset(n_readable, n_tasks, k_expl, where=f"atlas {atlas.path}",
                           allow_overlap=options.allow_overlap,
                           recorded_k=manifest.config.k)
    units_table = atlas.units()
    plans = []  # (layer, visualised units, their rows of units.parquet, featviz table, render options)
    for layer in names:
        meta, table = store.meta(layer), store.table(layer)
        per_side = int(meta["options"]["per_side"])
        if per_side < k_expl:
            raise BadInput(f"layer {layer}: its visualisations have {per_side} images per side, but MIS with "
                           f"k_expl={k_expl} shows {k_expl}; lower --k-expl to {per_side}, or make {k_expl} per side: "
                           f"unitlens featviz {atlas.path} --layers '{layer}' --per-side {k_expl} --force")
        counts = table.groupby("unit").size()
        units = np.array(sorted(int(u) for u, n in counts.items() if n >= 2 * per_side), dtype=np.int64)
        top, _ = atlas.exemplar_ids(layer)
        check_exemplars(top.shape[1], n_tasks, k_expl, where=f"layer {layer}")
        info = units_table[units_table["layer"] == layer].set_index("unit").loc[units].reset_index()
        plans.append((layer, units, info, table, meta["options"]))
    t1 = time.perf_counter()
    backend = as_backend(backend if backend is not None else options.backend, device)
    options = options.replace(backend=backend.name)
    if not getattr(backend, "embeds", True):
        raise BadInput(f"backend '{backend.name}' is a pairwise distance without embeddings; MIS here compares "
                       "embeddings by cosine similarity: use an embedding backend")
    cache = EmbeddingCache(atlas, backend)
    _, query_ranks = task_layout(n_tasks, k_expl)
    frames, embedded = [], 0
    with atlas.writing("mis featviz") if write else nullcontext(), torch.no_grad():
        for layer, units, info, table, render in plans:
            status = unit_status(info).to_numpy()
            scored = units[status == STATUS_SCORED]
            mis = np.full(len(units), np.nan)
            acc = np.full(len(units), np.nan)
            if len(scored):
                top, bottom = atlas.exemplar_ids(layer)
                pos_ids = top.long()[torch.from_numpy(scored)][:, query_ranks]  # (C, N) natural queries
                neg_ids = bottom.long()[torch.from_numpy(scored)][:, query_ranks]
                ids = torch.cat([pos_ids.reshape(-1), neg_ids.reshape(-1)])
                q = F.normalize(cache.get(ids, progress=progress).float(), dim=-1)
                C, D = len(scored), q.shape[1]
                pos_q, neg_q = q[:C * n_tasks].view(C, n_tasks, D), q[C * n_tasks:].view(C, n_tasks, D)
                pos_files, neg_files = _explanations(table, scored, k_expl)
                e, made = visualisation_embeddings(store, layer, pos_files + neg_files, backend, progress,
                                                   keep=write)
                embedded += made
                pos_e, neg_e = e[:C * k_expl].view(C, k_expl, D), e[C * k_expl:].view(C, k_expl, D)
                res = score_embeddings(pos_e, neg_e, pos_q, neg_q, tau)
                keep = status == STATUS_SCORED
                mis[keep], acc[keep] = res.mis.double().numpy(), res.accuracy.double().numpy()
            frames.append(pd.DataFrame({
                "layer": layer, "unit": units, "type": info["type"].to_numpy(), "depth": info["depth"].to_numpy(),
                "rel_depth": info["rel_depth"].to_numpy(), "rel_width": info["rel_width"].to_numpy(),
                METRIC: mis, METRIC_ACCURACY: acc, "n_tasks": n_tasks, "backend": backend.name, "tau": tau,
                "status": status, "steps": render.get("steps"), "size": render.get("size")}))
        t2 = time.perf_counter()
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        params = mis_params(options, shared, explanations="featviz")
        if write and len(frame):
            atlas.put_scores(scores_rows(frame, backend.name, params, ((METRIC, METRIC), (METRIC_ACCURACY,
                                                                                          METRIC_ACCURACY))))
    return FeatvizMIS(frame, backend.name, params, embedded,
                      {"check": t1 - t0, "embed and score": t2 - t1, "write": time.perf_counter() - t2})
