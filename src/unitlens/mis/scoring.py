"""The Machine Interpretability Score: one vectorised computation per layer, on tensors or on atlases.

For a task with positive/negative explanations E⁺, E⁻ and queries q⁺, q⁻ (paper eqs. 1–5)::

    s(q, E) = mean over e ∈ E of cos(q, e)
    Δ⁺ = s(q⁺, E⁺) − s(q⁺, E⁻),   Δ⁻ = s(q⁻, E⁺) − s(q⁻, E⁻)
    p = σ((Δ⁺ − Δ⁻) / τ),   MIS = mean of p over the N tasks;   accuracy = fraction of tasks with Δ⁺ − Δ⁻ > 0

With L2-normalised embeddings cos is a dot product, and the mean of dot products is the dot product with the
mean embedding, so s(q, E) = q · ē and Δ± = q± · (ē⁺ − ē⁻): per task, one weighted bag of its 2K explanation
embeddings (``embedding_bag``) and two dot products. When few distinct images serve many units (an atlas of
a small dataset), the (n, n) cosine matrix is computed once instead and every s(q, E) is a mean of gathered
scalars. Either way all units of a layer go through one computation (chunked over units to bound memory) —
no Python loop over units or tasks — on the accelerator when there is one. Everything is differentiable
with respect to the embeddings, so the score can serve as an optimisation target.

Entry points:

- :func:`score` — an (n, D) embedding table indexed by sample id (or by ``table_ids``) and :class:`Tasks`;
- :func:`score_embeddings` — explanation and query embeddings given directly (appendix D: feature
  visualisations or any other explanation method; explanations may be shared by all tasks of a unit);
- :func:`score_mis` — every unit of an atlas (``MISOptions``), embedded once through the backend's
  ``EmbeddingCache``, written to ``scores.parquet``; :func:`summarize` aggregates per layer, type and model.
  A pairwise backend (LPIPS, DISTS: f is minus a distance on image pairs, with no embedding) gives the (n, n)
  matrix of f over the images the tasks use (``PairwiseMatrix``, kept in the atlas; n² pairs), which takes the
  place of the cosine Gram matrix.
"""
from __future__ import annotations

import contextlib
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from unitlens.atlas import Atlas
from unitlens.atlas.lock import check_writable
from unitlens.backends import EmbeddingCache, PairwiseMatrix, as_backend
from unitlens.backends.base import Backend, PairwiseBackend
from unitlens.errors import BadInput, NotComputed
from unitlens.mis.defaults import TAU
from unitlens.mis.options import MISOptions
from unitlens.mis.similarities import embedding_contrasts, matrix_contrasts
from unitlens.mis.tasks import Tasks, check_dataset, check_exemplars, min_exemplars, task_rows
from unitlens.options import takes_options
from unitlens.runtime import pick_device, torch_threads

METRIC = "mis"
METRIC_ACCURACY = "mis_accuracy"
_GROUP_UNITS = 16384  # units of consecutive layers scored in one computation
GRAM_MAX_ENTRIES = 2**26  # largest (n, n) similarity matrix built automatically: 256 MiB float32
GRAM_ADVANTAGE = 8  # a matmul multiply-add is about this many times cheaper than a gathered float


@dataclass
class MISScores:
    """Per-task similarity differences of C units × N tasks, and the scores derived from them."""

    delta_pos: torch.Tensor  # (C, N): Δ⁺ = s(q⁺, E⁺) − s(q⁺, E⁻)
    delta_neg: torch.Tensor  # (C, N): Δ⁻ = s(q⁻, E⁺) − s(q⁻, E⁻)
    tau: float = TAU

    @property
    @torch_threads(1)
    def margin(self) -> torch.Tensor:
        """(C, N) Δ⁺ − Δ⁻: positive when the task is solved."""
        return self.delta_pos - self.delta_neg

    @property
    @torch_threads(1)
    def p(self) -> torch.Tensor:
        """(C, N) probability of solving each task, σ((Δ⁺ − Δ⁻) / τ)."""
        return torch.sigmoid(self.margin / self.tau)

    @property
    def mis(self) -> torch.Tensor:
        """(C,) the Machine Interpretability Score."""
        return mis_from_margins(self.margin, self.tau)

    @property
    def accuracy(self) -> torch.Tensor:
        """(C,) the uncalibrated variant: fraction of tasks with Δ⁺ − Δ⁻ > 0 (not differentiable)."""
        return accuracy_from_margins(self.margin)


@torch_threads(1)  # small elementwise work: single-threaded is fastest, and robust on busy cores
def mis_from_margins(margin: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """MIS of (..., N) task margins Δ⁺ − Δ⁻ at temperature ``tau``: mean over tasks of σ(margin / τ)."""
    if not tau > 0:
        raise BadInput(f"tau must be positive, got {tau}")
    return torch.sigmoid(margin / tau).mean(-1)


@torch_threads(1)
def accuracy_from_margins(margin: torch.Tensor) -> torch.Tensor:
    """Fraction of tasks with margin Δ⁺ − Δ⁻ > 0 (ties count as failures)."""
    return (margin > 0).to(margin.dtype if margin.is_floating_point() else torch.float32).mean(-1)


def _default_device(table: torch.Tensor, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if table.requires_grad or table.device.type != "cpu":
        return table.device
    return pick_device()


def _cpu_ops(device: torch.device) -> contextlib.AbstractContextManager:
    """Single-threaded torch operations on the CPU (the parallel work goes to ``run_jobs``): the small
    index operations around the hot loop would otherwise wait on busy cores."""
    return torch_threads(1) if torch.device(device).type == "cpu" else contextlib.nullcontext()


def _rows(ids: torch.Tensor, table_ids: torch.Tensor | None, n_rows: int) -> torch.Tensor:
    """Sample ids -> rows of the embedding table (a dense lookup when the ids are not too sparse), as int32:
    half the index traffic of int64 in the gathers."""
    return _rows64(ids, table_ids, n_rows).int()


def _rows64(ids: torch.Tensor, table_ids: torch.Tensor | None, n_rows: int) -> torch.Tensor:
    ids = ids.long()
    if table_ids is None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_rows):
            raise IndexError(f"task ids must be rows of the ({n_rows}, D) embedding table; got ids in "
                             f"[{int(ids.min())}, {int(ids.max())}] (pass table_ids to map sample ids to rows)")
        return ids
    table_ids = table_ids.to(ids.device).long()
    if ids.numel() == 0:
        return ids
    lo, hi = int(ids.min()), int(ids.max())
    if lo >= 0 and hi < 4 * len(table_ids) + 2**20:
        lut = torch.full((hi + 1,), -1, dtype=torch.long, device=ids.device)
        inside = (table_ids >= 0) & (table_ids <= hi)
        lut[table_ids[inside]] = torch.arange(len(table_ids), device=ids.device)[inside]
        rows = lut[ids]
        missing = rows < 0
    else:
        rows = torch.searchsorted(table_ids, ids).clamp(max=max(len(table_ids) - 1, 0))
        missing = table_ids[rows] != ids
    if bool(missing.any()):
        raise KeyError(f"{int(missing.sum())} task ids have no row in the embedding table "
                       f"(e.g. {ids[missing][:5].tolist()}); table_ids must be sorted and cover every task id")
    return rows


def _gather_method(n_rows: int, n_units: int, n_tasks: int, k_expl: int) -> str:
    """``gram`` when one (n, n) similarity matrix is cheaper than gathering every task's embeddings."""
    if n_rows * n_rows > GRAM_MAX_ENTRIES:
        return "gather"
    # gather moves C·N·(2K+2) embedding rows; the Gram matrix costs n²·D multiply-adds at matmul speed
    return "gram" if n_rows * n_rows < GRAM_ADVANTAGE * n_units * n_tasks * (2 * k_expl + 2) else "gather"


def _from_contrasts(contrasts: torch.Tensor, n_units: int, n_tasks: int, k_expl: int, tau: float) -> MISScores:
    """MISScores from (C·N, 2) contrasts ΣE⁺ − ΣE⁻ of f(q⁺, ·) and f(q⁻, ·) over K explanations each."""
    d = contrasts.view(n_units, n_tasks, 2) / k_expl
    return MISScores(d[..., 0], d[..., 1], tau)


def score(table: torch.Tensor, tasks: Tasks, tau: float = TAU, table_ids: torch.Tensor | None = None,
          device: str | torch.device | None = None, chunk_units: int | None = None,
          normalize: bool = False, method: str = "auto", threads: int | None = None) -> MISScores:
    """Score C units in one vectorised computation.

    ``table`` is an (n, D) L2-normalised embedding table; ``tasks`` holds row indices into it, or sample ids
    when ``table_ids`` (sorted (n,) sample ids of the rows) is given. ``normalize=True`` L2-normalises the
    table first. Results are on the table's device; the computation runs on ``device`` (default: the
    accelerator when present, unless the table requires grad, in which case its own device).

    ``method``: ``gather`` sums each task's explanation embeddings (``embedding_bag``) and takes two dot
    products per task; ``gram`` computes the (n, n) cosine matrix once and gathers scalars from it (far
    cheaper when few distinct images serve many units); ``auto`` picks by a cost estimate. ``chunk_units``
    sets the units per job or chunk (default: sized for the device), ``threads`` the CPU worker threads
    (default: torch's thread count; see :mod:`unitlens.mis.similarities`). Neither changes the result.
    """
    if table.ndim != 2:
        raise BadInput(f"expected an (n, D) embedding table, got shape {tuple(table.shape)}")
    if method not in ("auto", "gather", "gram"):
        raise BadInput(f"method must be auto, gather or gram, got '{method}'")
    out_device = table.device
    device = _default_device(table, device)
    table = table.to(device)
    if normalize:
        table = F.normalize(table, dim=-1)
    if table_ids is not None:
        table_ids = table_ids.to(device)
    C, N, K = tasks.n_units, tasks.n_tasks, tasks.k_expl
    if method == "auto":
        method = _gather_method(table.shape[0], C, N, K)
    similarity = table @ table.T if method == "gram" else None  # a matmul: all threads
    threads = threads or torch.get_num_threads()
    with _cpu_ops(device):
        tasks = tasks.map(lambda t: _rows(t.to(device), table_ids, table.shape[0]))
        step = max(1, int(chunk_units)) * N if chunk_units else None
        if similarity is not None:
            contrasts = matrix_contrasts(similarity, tasks.bags(), tasks.queries(), step, threads)
        else:
            contrasts = embedding_contrasts(table, tasks.bags(), tasks.queries(), step, threads)
        res = _from_contrasts(contrasts, C, N, K, tau)
    return MISScores(res.delta_pos.to(out_device), res.delta_neg.to(out_device), tau)


def score_gram(similarity: torch.Tensor, tasks: Tasks, tau: float = TAU, table_ids: torch.Tensor | None = None,
               chunk_units: int | None = None, threads: int | None = None) -> MISScores:
    """Score C units from a precomputed (n, n) similarity matrix f(image_a, image_b) of the images the tasks use.

    For cosine similarity pass ``table @ table.T``; any perceptual similarity works (e.g. a pairwise
    distance's negated matrix), as s(q, E) is the mean of f(q, e) over e ∈ E. ``tasks`` holds rows of the
    matrix, or sample ids when ``table_ids`` gives the sorted sample id of each row. Runs on the matrix's
    device; differentiable in it.
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise BadInput(f"expected a square (n, n) similarity matrix, got {tuple(similarity.shape)}")
    n = similarity.shape[0]
    if table_ids is not None:
        table_ids = table_ids.to(similarity.device)
    threads = threads or torch.get_num_threads()
    with _cpu_ops(similarity.device):
        tasks = tasks.map(lambda t: _rows(t.to(similarity.device), table_ids, n))
        C, N, K = tasks.n_units, tasks.n_tasks, tasks.k_expl
        step = max(1, int(chunk_units)) * N if chunk_units else None
        return _from_contrasts(matrix_contrasts(similarity, tasks.bags(), tasks.queries(), step, threads), C, N, K, tau)


def score_embeddings(pos_expl: torch.Tensor, neg_expl: torch.Tensor, pos_query: torch.Tensor,
                     neg_query: torch.Tensor, tau: float = TAU, normalize: bool = False) -> MISScores:
    """Score units whose explanation and query embeddings are given directly (appendix D).

    ``pos_expl``/``neg_expl``: (C, N, K, D) per task, or (C, K, D) when every task of a unit shows the same
    explanations (e.g. a unit's feature visualisations); ``pos_query``/``neg_query``: (C, N, D). Inputs are
    expected L2-normalised (``normalize=True`` normalises them). Differentiable in all inputs.
    """
    if pos_query.ndim != 3 or pos_query.shape != neg_query.shape:
        raise BadInput(f"queries must be two (C, N, D) tensors, got {tuple(pos_query.shape)} and "
                         f"{tuple(neg_query.shape)}")
    if pos_expl.ndim not in (3, 4) or neg_expl.ndim not in (3, 4):
        raise BadInput("explanations must be (C, N, K, D) or (C, K, D) tensors")
    if normalize:
        pos_expl, neg_expl, pos_query, neg_query = (F.normalize(x, dim=-1)
                                                     for x in (pos_expl, neg_expl, pos_query, neg_query))
    e_pos = pos_expl.mean(-2) if pos_expl.ndim == 4 else pos_expl.mean(-2)[:, None]
    e_neg = neg_expl.mean(-2) if neg_expl.ndim == 4 else neg_expl.mean(-2)[:, None]
    e_diff = e_pos - e_neg
    return MISScores(torch.linalg.vecdot(pos_query, e_diff), torch.linalg.vecdot(neg_query, e_diff), tau)


# ---------------------------------------------------------------------------------------------- atlases

STATUS_SCORED, STATUS_CONSTANT, STATUS_NONFINITE = "scored", "constant", "nonfinite"
TIE_COLUMNS = ("top_tied", "bottom_tied")  # exemplars the seeded tie-break chose (units.parquet)


@dataclass
class MISRun:
    """What :func:`score_mis` did: the per-unit table, counts, time per stage and the options it ran with."""

    frame: pd.DataFrame
    backend: str
    model: str
    params: dict
    n_images: int = 0
    cache_hits: int = 0  # images whose embedding (pairwise backends: matrix row) was read back
    cache_misses: int = 0  # images embedded (pairwise backends: matrix rows computed) in this run
    pairs: int = 0  # image pairs a pairwise backend compared in this run
    pairwise: bool = False  # the backend is a distance on image pairs (its similarity matrix replaced embeddings)
    seconds: dict = field(default_factory=dict)
    margins: dict = field(default_factory=dict)  # layer -> (C_scored, N) Δ⁺ − Δ⁻ of the scored units
    overlap: int = 0  # images in both the top and the bottom N·(K+1) exemplars of every unit (small datasets)
    options: MISOptions = field(default_factory=MISOptions)

    @property
    def counts(self) -> dict:
        status = self.frame["status"]
        return {"units": len(status), "scored": int((status == STATUS_SCORED).sum()),
                "constant": int((status == STATUS_CONSTANT).sum()),
                "nonfinite": int((status == STATUS_NONFINITE).sum())}

    def summary(self) -> dict[str, pd.DataFrame]:
        """Per-layer, per-type and per-model tables (see :func:`summarize`)."""
        return summarize(self.frame, model=self.model)

    def _repr_html_(self) -> str:
        from unitlens.notebook import header, table

        tables = self.summary()
        o = self.options
        facts = {"model": self.model, "backend": self.backend,
                 "tasks": f"N = {o.n_tasks}, K = {o.k_expl}, tau = {o.tau:g}", **self.counts,
                 **({"top/bottom overlap (biased)": self.overlap} if self.overlap else {}),
                 "seconds": round(sum(self.seconds.values()), 1)}
        return header("MIS run", facts) + table(tables["model"], "model") + table(tables["layer"], "by layer")


def unit_status(units: pd.DataFrame) -> pd.Series:
    """scored / constant / nonfinite for each row of an atlas unit table (non-finite wins over constant)."""
    status = np.where(units["nonfinite"].to_numpy() > 0, STATUS_NONFINITE,
                      np.where(units["constant"].to_numpy(dtype=bool), STATUS_CONSTANT, STATUS_SCORED))
    return pd.Series(status, index=units.index, name="status")


@takes_options(MISOptions)
def score_mis(atlas: Atlas | str | Path, options: MISOptions | None = None, *, backend: Backend | str | None = None,
              keep_margins: bool = False, threads: int | None = None, progress: bool = True) -> MISRun:
    """MIS of every unit of an atlas (or of the ``layers`` named, globs allowed), one vectorised pass per layer.

    A dataset of fewer than 2·N·(K+1) readable images is refused (``TooFewImages``): every unit's most and
    least activating sets would share images. ``allow_overlap=True`` scores it anyway, with a warning, and
    records the number of shared images per unit as ``overlap`` in the params.

    All sample ids any task needs are embedded once through ``EmbeddingCache(atlas, backend)`` (a pairwise
    backend: compared pairwise once through ``PairwiseMatrix(atlas, backend)``, n² pairs of n images). Constant
    units and units with non-finite activations are not scored: they appear with ``status`` ``constant`` or
    ``nonfinite`` and NaN scores. All units are written to ``scores.parquet`` (metrics ``mis`` and
    ``mis_accuracy``, the backend's name, params ``{"n_tasks", "k", "tau"[, "overlap"], "options"}``; missing
    values for the excluded units) unless ``write=False``.

    Parameters
    ----------
    atlas
        The atlas (or its folder) from ``record``.
    options
        The ``MISOptions``; keyword arguments override its fields (``n_tasks=5``).
    backend
        A ``Backend`` instance, or a backend name; default ``options.backend``.
    keep_margins
        Keep every scored unit's per-task margins Δ⁺ − Δ⁻ in the result (for ``margins_frame`` and calibration).
    threads
        CPU threads of the scoring computation (default: torch's).
    progress
        Show progress bars.

    Returns
    -------
    MISRun
        ``frame``: one row per unit (layer, unit, type, depth, rel_depth, rel_width, mis, mis_accuracy, n_tasks,
        backend, tau, status); ``summary()``: per layer, type and model; counts, timings and the options.
    """
    assert options is not None  # takes_options always passes them
    if options.explanations != "exemplars":
        raise BadInput("explanations='featviz' is MIS of the feature visualisations: "
                       "unitlens.featviz.score_featviz(atlas, options), or unitlens mis ATLAS --explanations featviz")
    n_tasks, k_expl, tau, write = options.n_tasks, options.k_expl, options.tau, options.write
    layers, device, chunk_units = options.layers, options.device, options.chunk_units
    threads = threads or torch.get_num_threads()
    t0 = time.perf_counter()
    atlas = Atlas.open(atlas)
    if write:  # before any work: a read-only atlas would otherwise fail only when the scores are written
        check_writable(atlas.path, fix=f"score without writing: unitlens mis {atlas.path} --no-write (Python: "
                                       "write=False), or copy the atlas to a writable place")
    infos = atlas.select_layers(list(layers) if layers is not None else None)
    with atlas.writing("mis") if write else nullcontext():
        manifest = atlas.manifest
        n_samples = manifest.n_images or 0
        n_readable = n_samples - (manifest.n_skipped or 0)
        shared = check_dataset(n_readable, n_tasks, k_expl,
                               where=f"atlas {atlas.path}", allow_overlap=options.allow_overlap,
                               recorded_k=manifest.config.k)
        units = atlas.units()
        units = units[units["layer"].isin({i.name for i in infos})].copy()
        units["status"] = unit_status(units)
        need = min_exemplars(n_tasks, k_expl)
        by_layer = units.groupby("layer", sort=False).indices  # layer -> positions in units
        unit_no, scored = units["unit"].to_numpy(), (units["status"] == STATUS_SCORED).to_numpy()
        per_layer = []  # (layer, units index of its scored units, their (C, 2·need) top-then-bottom exemplar ids)
        with torch_threads(1):  # small operations per layer: one thread is fastest, and robust on busy cores
            for info in infos:  # check every layer before embedding anything; read each exemplar file once
                top, bottom = atlas.exemplar_ids(info.name)
                check_exemplars(top.shape[1], n_tasks, k_expl, where=f"layer {info.name}")
                pos = by_layer.get(info.name, np.zeros(0, np.int64))
                pos = pos[np.argsort(unit_no[pos], kind="stable")]
                if not np.array_equal(unit_no[pos], np.arange(top.shape[0])):
                    raise BadInput(f"layer {info.name}: units.parquet and the exemplars disagree on its units")
                keep = scored[pos]
                if keep.any():
                    both = np.concatenate([top.numpy()[keep, :need], bottom.numpy()[keep, :need]], 1)
                    per_layer.append((info, units.index[pos[keep]], both))
        present = np.zeros(max([n_samples] + [int(ids.max()) + 1 for _, _, ids in per_layer]), bool)
        for _, _, both in per_layer:  # the ids the tasks need, sorted (no sort of all their uses)
            np.put(present, both, True)
            if np.count_nonzero(present) >= n_readable:  # every readable image is used already (small datasets)
                break
        ids = torch.from_numpy(np.flatnonzero(present))
        t1 = time.perf_counter()

        backend = as_backend(backend if backend is not None else options.backend, device)
        t_backend = time.perf_counter()
        pairs, pairwise = 0, not backend.embeds
        if not pairwise:
            cache = EmbeddingCache(atlas, backend)
            hits0, misses0 = cache.hits, cache.misses
            table = cache.get(ids, progress=progress) if len(ids) else torch.zeros(0, getattr(backend, "dim", 1))
            hits, misses = cache.hits - hits0, cache.misses - misses0
        else:  # a perceptual distance on image pairs: the (n, n) matrix of every pair of the images the tasks use
            matrix = PairwiseMatrix(atlas, cast(PairwiseBackend, backend))
            table = matrix.get(ids, progress=progress)  # the similarity matrix replaces the embedding table
            hits, misses, pairs = matrix.stored, len(ids) - matrix.stored, matrix.pairs
        t2 = time.perf_counter()

        mis_col = pd.Series(np.nan, index=units.index)
        acc_col = pd.Series(np.nan, index=units.index)
        margins: dict[str, tuple[np.ndarray, torch.Tensor]] = {}
        compute = _default_device(table, device)
        table = table.to(compute)
        dense = len(ids) == len(present)  # every image is used (a small dataset): sample ids are table rows
        lut = None if dense else (np.cumsum(present) - 1).astype(np.int32)  # sample id -> table row
        total = sum(len(rows) for _, rows, _ in per_layer)
        step = max(1, int(chunk_units)) * n_tasks if chunk_units else None
        group: list = []  # layers scored together: a few large tensor operations instead of many small ones

        def flush() -> None:
            both = np.concatenate([g[2] for g in group]) if len(group) > 1 else group[0][2]
            rows = torch.from_numpy(both if lut is None else lut[both]).to(compute)  # int32 rows throughout
            bags, queries = task_rows(rows, n_tasks, k_expl)
            contrasts = (matrix_contrasts(gram, bags, queries, step, threads) if gram is not None
                         else embedding_contrasts(table, bags, queries, step, threads))
            res = _from_contrasts(contrasts, len(rows), n_tasks, k_expl, tau)
            index = group[0][1].append([g[1] for g in group[1:]]) if len(group) > 1 else group[0][1]
            mis_col.loc[index] = res.mis.double().cpu().numpy()
            acc_col.loc[index] = res.accuracy.double().cpu().numpy()
            if keep_margins:
                margin, start = res.margin.cpu(), 0
                for info, unit_rows, _ in group:
                    margins[info.name] = (units.loc[unit_rows, "unit"].to_numpy(), margin[start:start + len(unit_rows)])
                    start += len(unit_rows)
            group.clear()

        with torch.no_grad():
            gram = None  # one similarity matrix serves every layer
            if pairwise:
                gram = table
            elif _gather_method(len(ids), total, n_tasks, k_expl) == "gram":
                gram = table @ table.T
            with _cpu_ops(compute):
                for item in per_layer:
                    group.append(item)
                    if sum(len(g[1]) for g in group) >= _GROUP_UNITS:
                        flush()
                if group:
                    flush()
        t3 = time.perf_counter()

        name = backend.name
        options = options.replace(backend=name)  # the backend that ran, also when given as an instance
        params = mis_params(options, shared)
        frame = pd.DataFrame({
            "layer": units["layer"], "unit": units["unit"], "type": units["type"], "depth": units["depth"],
            "rel_depth": units["rel_depth"], "rel_width": units["rel_width"], "mis": mis_col,
            "mis_accuracy": acc_col, "n_tasks": n_tasks, "backend": name, "tau": tau, "status": units["status"],
            **{col: units[col] for col in TIE_COLUMNS if col in units},
        }).sort_values(["depth", "unit"], kind="stable").reset_index(drop=True)
        if write:
            atlas.put_scores(scores_rows(frame, name, params))  # other layers' rows stay
        t4 = time.perf_counter()
        return MISRun(frame=frame, backend=name, model=manifest.config.model,
                      params=params, n_images=int(len(ids)), cache_hits=hits, cache_misses=misses, pairs=pairs,
                      pairwise=pairwise,
                      seconds={"tasks": t1 - t0, "backend": t_backend - t1, "embed": t2 - t_backend, "score": t3 - t2,
                               "write": t4 - t3},
                      margins=margins, overlap=shared, options=options)


def scores_rows(frame: pd.DataFrame, backend: str, params: dict,
                metrics: tuple[tuple[str, str], ...] = ((METRIC, "mis"), (METRIC_ACCURACY, "mis_accuracy"))
                ) -> pd.DataFrame:
    """The long ``scores.parquet`` rows of every unit of a frame: one per unit and (metric, column of the frame) in
    ``metrics`` (default: ``mis`` and ``mis_accuracy``).

    Constant and non-finite units get rows too, with a missing value (null in Parquet, ignored by SQL
    aggregates), so the table says which units were considered and that they were not scored.
    """
    p = json.dumps(params, sort_keys=True)
    return pd.concat([
        pd.DataFrame({"layer": frame["layer"], "unit": frame["unit"], "metric": metric, "backend": backend,
                      "value": frame[col].astype(float), "params": p})
        for metric, col in metrics
    ], ignore_index=True)


def mis_params(options: MISOptions, overlap: int = 0, **extra: Any) -> dict:
    """The ``params`` stored with every score row: N, K, tau (what readers of the scores use), the overlap of a
    small dataset, and every option the scores were made with."""
    return {"n_tasks": options.n_tasks, "k": options.k_expl, "tau": options.tau, **extra,
            **({"overlap": overlap} if overlap else {}), "options": options.as_dict()}


def load_scores(atlas, backend: str | None = None) -> pd.DataFrame:
    """The per-unit MIS frame of an atlas rebuilt from its ``scores.parquet`` (as ``score_mis(...).frame``).

    ``backend`` picks among several scored backends; it may be left out when there is only one.
    """
    atlas = Atlas.open(atlas)
    scores = atlas.scores()
    mis = scores[scores["metric"].isin([METRIC, METRIC_ACCURACY])]
    backends = sorted(mis.loc[mis["metric"] == METRIC, "backend"].unique())
    if not backends:
        raise NotComputed(f"atlas {atlas.path} has no MIS scores yet; run unitlens mis {atlas.path} first")
    if backend is None:
        if len(backends) > 1:
            raise BadInput(f"atlas {atlas.path} has MIS scores of several backends {backends}; pick one")
        backend = backends[0]
    if backend not in backends:
        raise NotComputed(f"atlas {atlas.path} has no MIS scores for backend '{backend}'; it has {backends}")
    mis = mis[mis["backend"] == backend]
    wide = mis.pivot_table(index=["layer", "unit"], columns="metric", values="value", dropna=False).reset_index()
    params = mis[mis["metric"] == METRIC].drop_duplicates(["layer", "unit"])[["layer", "unit", "params"]]
    parsed = {p: json.loads(p) for p in params["params"].unique()}
    params = params.assign(n_tasks=[parsed[p].get("n_tasks") for p in params["params"]],
                           tau=[parsed[p].get("tau") for p in params["params"]]).drop(columns="params")
    units = atlas.units()
    units = units[units["layer"].isin(set(mis["layer"]))].copy()
    units["status"] = unit_status(units)
    ties = [col for col in TIE_COLUMNS if col in units]
    frame = units[["layer", "unit", "type", "depth", "rel_depth", "rel_width", "status", *ties]].merge(
        wide, on=["layer", "unit"], how="left").merge(params, on=["layer", "unit"], how="left")
    for col in (METRIC, METRIC_ACCURACY):
        if col not in frame:
            frame[col] = np.nan
    frame = frame.assign(backend=backend)
    cols = ["layer", "unit", "type", "depth", "rel_depth", "rel_width", "mis", "mis_accuracy", "n_tasks",
            "backend", "tau", "status", *ties]
    return frame[cols].sort_values(["depth", "unit"], kind="stable").reset_index(drop=True)


def _agg(group: pd.DataFrame) -> dict:
    scored = group[group["status"] == STATUS_SCORED]
    v = scored["mis"].to_numpy(dtype=float)
    a = scored["mis_accuracy"].to_numpy(dtype=float)
    some = len(v) > 0
    return {"units": len(group), "scored": len(v),
            "constant": int((group["status"] == STATUS_CONSTANT).sum()),
            "nonfinite": int((group["status"] == STATUS_NONFINITE).sum()),
            "mis_mean": float(v.mean()) if some else np.nan,
            "mis_p5": float(np.quantile(v, 0.05)) if some else np.nan,
            "mis_p95": float(np.quantile(v, 0.95)) if some else np.nan,
            "accuracy_mean": float(a.mean()) if some else np.nan}


def summarize(frame: pd.DataFrame, model: str = "model") -> dict[str, pd.DataFrame]:
    """Aggregate a per-unit MIS frame: ``{"layer", "type", "model"}`` tables with unit counts (scored,
    constant, non-finite) and the mean, 5th and 95th percentile of MIS over scored units (plus mean accuracy).
    """
    if "status" not in frame:
        frame = frame.assign(status=np.where(frame["mis"].notna(), STATUS_SCORED, STATUS_CONSTANT))
    by_layer = pd.DataFrame([
        {"layer": layer, "type": g["type"].iloc[0], "depth": g["depth"].iloc[0],
         "rel_depth": g["rel_depth"].iloc[0], "rel_width": g["rel_width"].iloc[0], **_agg(g)}
        for layer, g in frame.groupby("layer", sort=False)
    ])
    if len(by_layer):
        by_layer = by_layer.sort_values("depth", kind="stable").reset_index(drop=True)
    by_type = pd.DataFrame([{"type": t, "layers": g["layer"].nunique(), **_agg(g)}
                            for t, g in frame.groupby("type", sort=True)])
    by_model = pd.DataFrame([{"model": model, "layers": frame["layer"].nunique(), **_agg(frame)}])
    return {"layer": by_layer, "type": by_type, "model": by_model}


def margins_frame(run: MISRun) -> pd.DataFrame:
    """Per-task margins Δ⁺ − Δ⁻ of a run made with ``keep_margins=True``: index (layer, unit), columns tasks."""
    if not run.margins:
        raise BadInput("this run kept no margins; call score_mis(..., keep_margins=True)")
    parts = []
    for layer, (unit_ids, m) in run.margins.items():
        idx = pd.MultiIndex.from_arrays([[layer] * len(unit_ids), unit_ids], names=["layer", "unit"])
        parts.append(pd.DataFrame(m.double().numpy(), index=idx))
    return pd.concat(parts)
