"""``execute(task)``: one task of a study, in whichever process the runner puts it (its own, a ``--jobs`` worker,
a Ray task): one step of one entry, or the record step of entries that share their data (one ``record_many`` pass
per group that fits the memory budget).

A task returns one outcome per entry (status ``done`` or ``failed``, the error text, seconds, a small result) and
never raises for a failing entry: a model that cannot load, a bad checkpoint or an out-of-memory error fail that
entry only. Every write into an entry's atlas goes through the existing steps, under the atlas's write lock.

Every task runs on the study's torch thread count, whichever process runs it (this one's count is given back
after), so no result depends on the executor. A step marked ``redo`` starts from nothing: the record is recorded
again (``force``), MIS drops its earlier scores of the backends involved, the lens its earlier vectors and measures.
"""
from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from unitlens.errors import UnitlensError
from unitlens.runtime import torch_threads
from unitlens.study.defaults import THREADS
from unitlens.study.folder import StudyFolder, entry_of
from unitlens.study.spec import Entry, step_options


@dataclass
class Task:
    """What a worker needs: the step, the ``study.json`` records of its entries, the study folder and settings;
    ``redo``: the entries whose step starts from nothing -> the backend of the results it replaces (or None)."""

    step: str
    entries: list[dict]
    study: str
    share_embeddings: bool = True
    memory_budget: int = 4096 * 2**20
    progress: bool = False
    threads: int = THREADS
    redo: dict[str, str | None] = field(default_factory=dict)


def outcome(entry: str, step: str, seconds: float, error: BaseException | None = None, result: dict | None = None
            ) -> dict:
    """The record of one entry's step a task hands back to the runner."""
    if error is None:
        return {"entry": entry, "step": step, "status": "done", "error": "", "seconds": round(seconds, 3),
                "result": result or {}}
    text = str(error) if isinstance(error, UnitlensError) else f"{type(error).__name__}: {error}"
    if not isinstance(error, UnitlensError):  # a bug or a resource failure: keep where it happened
        text += "\n" + "".join(traceback.format_exception(error)[-3:]).strip()
    return {"entry": entry, "step": step, "status": "failed", "error": text, "seconds": round(seconds, 3),
            "result": result or {}}


def entry_record_options(entry: Entry):
    """The ``RecordOptions`` of an entry: its layer selection and its ``[record]`` table."""
    from unitlens.recording.options import RecordOptions

    chosen = {"layers": entry.layers, "types": entry.types, "exclude": entry.exclude,
              "keep_first_last": entry.keep_first_last}
    return RecordOptions.from_mapping({**entry.options.get("record", {}),
                                       **{k: v for k, v in chosen.items() if v is not None}})


def load_entry_model(entry: Entry, meta: bool = False):
    """The entry's model with its weights (pretrained, seeded random, or its checkpoint; ``meta``: none, on the
    meta device) and its layers, checked as the record pass checks them (before any image is read: a layer it
    cannot record fails the entry here)."""
    from unitlens.recording.run import select_layers
    from unitlens.zoo import load_model

    loaded = load_model(entry.model, pretrained=not entry.random, checkpoint=entry.checkpoint, meta=meta)
    return loaded, select_layers(loaded, None, entry_record_options(entry))


def execute(task: Task, report: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Run ``task``; one outcome per entry. ``report`` (in-process runs) gets the outcomes of a record task's
    passes as each pass ends, so the study's state follows a long record step."""
    entries = [entry_of(r) for r in task.entries]
    with torch_threads(task.threads):
        if task.step == "record":
            return _record(task, entries, report or (lambda outcomes: None))
        return {"accuracy": _accuracy, "mis": _mis, "lens": _lens, "featviz": _featviz}[task.step](task, entries)


# ---------------------------------------------------------------------------------------------- record
def _record(task: Task, entries: list[Entry], report: Callable[[list[dict]], None]) -> list[dict]:
    """Models are loaded one after another and gathered into a pass while their estimated memory fits the budget;
    a full pass runs (and its models are let go) before the next model loads."""
    from unitlens.recording import record, record_many
    from unitlens.recording.many import estimate_bytes
    from unitlens.recording.options import RecordOptions

    folder = StudyFolder(task.study)
    # the runner groups entries that redo their record apart from those that resume it
    options = {**entries[0].options.get("record", {}), "force": bool(task.redo)}
    chosen = RecordOptions.from_mapping(options)
    k, merge_every = chosen.k, chosen.merge_every
    results: dict[str, dict] = {}

    def one(entry: Entry, loaded, layers, load_s: float) -> None:
        t0 = time.perf_counter()
        try:
            res = record(loaded, entry.data, folder.atlas_path(entry.name), layers, progress=task.progress, **options)
        except Exception as err:  # noqa: BLE001 - one entry's failure is its outcome, the others go on
            results[entry.name] = outcome(entry.name, "record", load_s + time.perf_counter() - t0, err)
            return
        results[entry.name] = outcome(entry.name, "record", load_s + res.seconds, result=_record_result(res, 1))

    def run_pass(group: list) -> None:
        if len(group) == 1:
            one(*group[0])
        else:
            t0 = time.perf_counter()
            try:
                shared = record_many([g[1] for g in group], group[0][0].data,
                                     [folder.atlas_path(g[0].name) for g in group], [g[2] for g in group],
                                     progress=task.progress, **options)
            except Exception:  # noqa: BLE001 - find which entry fails: each records (resumes) on its own
                for item in group:
                    one(*item)
            else:
                seconds = (time.perf_counter() - t0) / len(group)
                for (entry, _, _, load_s), res in zip(group, shared):
                    results[entry.name] = outcome(entry.name, "record", load_s + seconds,
                                                  result=_record_result(res, len(group)))
        report([results[g[0].name] for g in group])

    current: list = []  # (entry, loaded, layers, load seconds) of the pass being gathered
    size = 0
    for entry in entries:
        t0 = time.perf_counter()
        try:
            loaded, layers = load_entry_model(entry)
        except Exception as err:  # noqa: BLE001
            results[entry.name] = outcome(entry.name, "record", time.perf_counter() - t0, err)
            report([results[entry.name]])
            continue
        need = estimate_bytes(loaded, layers, k, merge_every)
        if current and size + need > task.memory_budget:
            run_pass(current)
            current, size = [], 0
        current.append((entry, loaded, layers, time.perf_counter() - t0))
        size += need
    if current:
        run_pass(current)
    return [results[e.name] for e in entries]


def _record_result(res, shared_by: int) -> dict:
    m = res.atlas.manifest
    return {"images": res.n_images, "skipped": res.n_skipped, "units": m.n_units, "layers": len(m.layers),
            "already_complete": res.already_complete, "shared_pass": shared_by}


def each_entry(step: str, entries: list[Entry], work: Callable[[Entry], dict]) -> list[dict]:
    """One outcome per entry: the small result of ``work(entry)``, or its error (the other entries go on)."""
    out = []
    for entry in entries:
        t0 = time.perf_counter()
        try:
            result = work(entry)
        except Exception as err:  # noqa: BLE001 - one entry's failure is its outcome
            out.append(outcome(entry.name, step, time.perf_counter() - t0, err))
            continue
        out.append(outcome(entry.name, step, time.perf_counter() - t0, result=result))
    return out


# ---------------------------------------------------------------------------------------------- accuracy
def _accuracy(task: Task, entries: list[Entry]) -> list[dict]:
    from unitlens.study.accuracy import measure_accuracy

    def work(entry: Entry) -> dict:
        loaded, _ = load_entry_model(entry)
        assert entry.accuracy_folder is not None  # the accuracy step exists only for entries with a folder
        return measure_accuracy(loaded, entry.accuracy_folder, progress=task.progress)

    return each_entry("accuracy", entries, work)


# ---------------------------------------------------------------------------------------------- mis and lens
@contextmanager
def shared_embeddings(task: Task, atlas, backend) -> Iterator[None]:
    """Within the block, the entry's embedding cache of ``backend`` holds what the study's pool holds; what the
    block embeds goes back to the pool (see ``unitlens.study.embeddings``)."""
    if not task.share_embeddings:
        yield
        return
    from unitlens.study.embeddings import pool_path, publish_cache, seed_cache

    pool = pool_path(StudyFolder(task.study).embeddings, atlas, backend.name)
    cache = atlas.backend_path("embeddings", backend.name)
    seed_cache(pool, cache)
    try:
        yield
    finally:
        publish_cache(cache, pool)


@contextmanager
def entry_backend(task: Task, entry: Entry, step: str, default: str) -> Iterator[tuple]:
    """(atlas, backend, the step's other options) of an entry, with the atlas's write lock held and the study's
    embeddings shared for the block."""
    from unitlens.atlas import Atlas
    from unitlens.backends import as_backend

    options = dict(entry.options.get(step, {}))
    atlas = Atlas(StudyFolder(task.study).atlas_path(entry.name))
    backend = as_backend(options.pop("backend", default), options.get("device"))
    with atlas.writing(f"study {step}"), shared_embeddings(task, atlas, backend):
        yield atlas, backend, options


def replaced_backends(task: Task, entry: Entry, backend) -> set[str]:
    """The backends whose results of this step an entry that redoes it drops first (none if it does not)."""
    if entry.name not in task.redo:
        return set()
    earlier = task.redo[entry.name]
    return {backend.name} | ({earlier} if earlier else set())


def _mis(task: Task, entries: list[Entry]) -> list[dict]:
    from unitlens.mis.defaults import BACKEND
    from unitlens.mis.options import MISOptions
    from unitlens.mis.scoring import METRIC, METRIC_ACCURACY, score_mis

    def work(entry: Entry) -> dict:
        options = MISOptions.from_mapping(entry.options.get("mis", {}))
        with entry_backend(task, entry, "mis", BACKEND) as (atlas, backend, _):
            for name in replaced_backends(task, entry, backend):
                atlas.drop_scores((METRIC, METRIC_ACCURACY), name)
            run = score_mis(atlas, options, backend=backend, progress=task.progress)
        return {"backend": run.backend, **run.counts, "cache_misses": run.cache_misses}

    return each_entry("mis", entries, work)


def _lens(task: Task, entries: list[Entry]) -> list[dict]:
    from unitlens.lens.analysis import METRICS, measures
    from unitlens.lens.defaults import DEFAULT_LENS_BACKEND
    from unitlens.lens.embed import embed_units
    from unitlens.lens.options import LensStepOptions
    from unitlens.lens.store import LensStore

    def work(entry: Entry) -> dict:
        with entry_backend(task, entry, "lens", DEFAULT_LENS_BACKEND) as (atlas, backend, options):
            for name in replaced_backends(task, entry, backend):
                atlas.drop_scores(METRICS, name)
                if atlas.backend_path("lens", name).is_dir():
                    store = LensStore(atlas, name)
                    store.reset(store.weights_id)
            chosen = LensStepOptions.from_mapping(options)
            embedded = embed_units(atlas, backend, chosen.embed_options(), progress=task.progress)
            measured = measures(atlas, backend.name, chosen.measures_options())
        return {"backend": backend.name, "embedded": len(embedded.embedded), "layers": int(len(measured.layers))}

    return each_entry("lens", entries, work)


def _featviz(task: Task, entries: list[Entry]) -> list[dict]:
    """Feature visualisations of the entry's atlas (``[featviz]`` layers, units, steps, ...), then their MIS with
    the mis step's backend (unless ``[featviz]`` names another)."""
    from unitlens.featviz.defaults import METRIC, METRIC_ACCURACY
    from unitlens.featviz.options import FeatvizOptions
    from unitlens.featviz.run import featviz_atlas
    from unitlens.featviz.scoring import score_featviz
    from unitlens.mis.defaults import BACKEND
    from unitlens.mis.options import MISOptions

    def work(entry: Entry) -> dict:
        default = entry.options.get("mis", {}).get("backend", BACKEND)
        visualise, scoring = step_options("featviz", entry.options.get("featviz", {}))
        assert isinstance(visualise, FeatvizOptions) and isinstance(scoring, MISOptions)
        if entry.name in task.redo:  # the images too: made from other inputs
            visualise = visualise.replace(force=True)
        with entry_backend(task, entry, "featviz", default) as (atlas, backend, _):
            for name in replaced_backends(task, entry, backend):
                atlas.drop_scores((METRIC, METRIC_ACCURACY), name)
            made = featviz_atlas(atlas, options=visualise, progress=task.progress)
            run = score_featviz(atlas, scoring, backend=backend, progress=task.progress)
        return {"backend": run.backend, "units": int(len(run.frame)),
                "made": sum(len(u) for u in made.made.values())}

    return each_entry("featviz", entries, work)
