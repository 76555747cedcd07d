"""``run_study(study_file, out)``: every step of every entry of a study, resumable, one entry's failure isolated.

The study file is the source: the runner reads and checks it (every error before any work), works out what each
step of each entry is computed from (``unitlens.study.inputs``: model, checkpoint and image bytes, options),
takes the study folder's write lock, copies the file in (the record of what ran), and updates ``study.json``
(``unitlens.study.staleness``): steps whose inputs changed, and those that read their results, are redone (and
said so per entry), new entries run, entries the file no longer has are kept as removed (or deleted with
``prune``). It then schedules tasks (``unitlens.study.steps``): the record step of the entries that share their
data and record options as one task (one ``record_many`` pass per group that fits the memory budget), then each
entry's other steps in order, each as its own task. It keeps ``study.json`` up to date after every task, so a
stopped run resumes where it was: done steps are skipped, an interrupted record resumes from its checkpoint, an
interrupted MIS or lens step starts again (its embeddings are cached), and failed steps are tried again. At the
end it writes the study table (``study.parquet``).

Where tasks run:

- sequentially in this process (the default), with progress bars;
- ``jobs=N``: N worker processes on this machine (the entries sharing a record pass are split so that every
  worker has work);
- ``ray=ADDRESS``: one Ray task per entry and step on a Ray cluster (``"local"`` starts one on this machine,
  ``"auto"`` joins the running one), each asking for ``cpus_per_task`` CPUs (default: the study's threads) and
  ``gpus_per_task`` GPUs. The study folder must be on storage every node sees at the same path.

The results do not depend on where the tasks ran: every step runs with the study's ``threads`` torch threads
(the study file's key, default 1) in every executor. The thread count matters because a forward pass cuts its
float reductions by threads, so activations may differ in the last bits between thread counts.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from unitlens.errors import BadInput
from unitlens.options import takes_options
from unitlens.runtime import Progress
from unitlens.study.folder import StudyFolder, entry_status
from unitlens.study.hashes import FileHashes
from unitlens.study.inputs import entry_inputs
from unitlens.study.options import StudyRunOptions
from unitlens.study.spec import StudySpec, load_spec
from unitlens.study.staleness import update_state
from unitlens.study.steps import Task, execute


@dataclass
class StudyRun:
    """What a run did: the study folder, its final state, the study table, the entries that failed, the steps it
    redid (entry -> steps), the entries kept as removed, and the notes it gave."""

    folder: Path
    state: dict
    table: pd.DataFrame
    failed: dict[str, str] = field(default_factory=dict)  # entry -> "step: error"
    seconds: float = 0.0
    redone: dict[str, list[str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every entry finished."""
        return not self.failed

    def _repr_html_(self) -> str:
        from unitlens.notebook import escape, header, table

        live = [r for r in self.state["entries"] if not r.get("removed")]
        facts = {"folder": self.folder, "entries": len(live), "failed": len(self.failed),
                 "redone": ", ".join(f"{k}: {', '.join(v)}" for k, v in self.redone.items()) or "nothing",
                 "removed": ", ".join(self.removed) or "none", "seconds": round(self.seconds, 1)}
        failed = "".join(f"<div><b>{escape(k)}</b>: {escape(v)}</div>" for k, v in self.failed.items())
        return header(f"study {self.state.get('name', '')}", facts) + failed + table(self.table, "study table")


# ---------------------------------------------------------------------------------------------- executors
class Inline:
    """Tasks run one after another in this process; ``report`` hears a record task's passes as they end."""

    capacity = 1  # tasks in flight at once
    report = None

    def submit(self, task: Task) -> Future:
        future: Future = Future()
        future.set_result(execute(task, self.report))
        return future

    def wait(self, handles: list) -> list:
        return list(handles)

    def result(self, handle) -> list[dict]:
        return handle.result()

    def close(self) -> None:
        pass


class Processes(Inline):
    """Tasks run in ``jobs`` worker processes on this machine (spawned: torch and fork do not mix)."""

    def __init__(self, jobs: int):
        self.capacity = jobs
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))

    def submit(self, task: Task) -> Future:
        return self.pool.submit(execute, task)

    def wait(self, handles: list) -> list:
        return list(wait(handles, return_when=FIRST_COMPLETED).done)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class RayTasks(Inline):
    """Tasks run as Ray tasks: on the cluster at ``address`` ("auto": the running one; "local": start one here),
    or on the Ray instance this process already started."""

    def __init__(self, address: str, cpus_per_task: int, gpus_per_task: float):
        try:
            import ray
        except ImportError as err:
            raise BadInput("--ray needs the ray package: pip install 'ray[default]'") from err
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=None if address in ("", "local") else address, log_to_driver=False)
        self.remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task)(execute)
        resources = ray.cluster_resources()  # as many tasks in flight as the cluster can run at once
        slots = [resources.get("CPU", 1) / cpus_per_task] + \
            ([resources.get("GPU", 0) / gpus_per_task] if gpus_per_task else [])
        self.capacity = max(1, int(min(slots)))

    def submit(self, task: Task):
        return self.remote.remote(task)

    def wait(self, handles: list) -> list:
        done, _ = self.ray.wait(list(handles), num_returns=1)
        return done

    def result(self, handle) -> list[dict]:
        return self.ray.get(handle)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


# ---------------------------------------------------------------------------------------------- scheduling
def _next_step(record: dict) -> str | None:
    """The entry's first step that is not done, if every step before it is done (None: finished, blocked or
    removed)."""
    if record.get("removed"):
        return None
    for step, st in record["steps"].items():
        if st["status"] == "failed":
            return None
        if st["status"] != "done":
            return step
    return None


def _record_groups(records: list[dict], split: int, together: bool) -> list[list[dict]]:
    """Entries whose record steps can share a pass: same data and record options, and all redoing their record or
    none (in study order); each group cut into ``split`` contiguous parts; every entry alone unless ``together``."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        key = json.dumps([r["data"], r["steps"]["record"]["options"], "redo" in r["steps"]["record"]], sort_keys=True)
        groups.setdefault(key, []).append(r)
    out = []
    for group in groups.values():
        if not together:
            out += [[r] for r in group]
            continue
        parts = max(1, min(split, len(group)))
        size = -(-len(group) // parts)
        out += [group[i:i + size] for i in range(0, len(group), size)]
    return out


def _forced(spec: StudySpec, force: bool | Sequence[str]) -> set[str]:
    """The entries ``force`` names (``True``: all); an unknown name is an error naming those there are."""
    names = [e.name for e in spec.entries]
    if isinstance(force, bool):
        return set(names) if force else set()
    unknown = [n for n in force if n not in names]
    if unknown:
        raise BadInput(f"--force names no entry '{unknown[0]}' of study {spec.name}; it has {', '.join(names)}")
    return set(force)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


@takes_options(StudyRunOptions)
def run_study(study_file: str | Path, out: str | Path | None = None, options: StudyRunOptions | None = None, *,
              entries: Sequence[str] | None = None, progress: bool = True,
              notify: Callable[[str], None] | None = None) -> StudyRun:
    """Run (or resume, or bring up to date) the study in ``study_file`` into the folder ``out``; see the module doc.

    Parameters
    ----------
    study_file
        The study file (TOML).
    out
        The study folder (default ``studies/<name>``); resumed if it exists.
    options
        The ``StudyRunOptions`` (where the tasks run, what each Ray task asks for, ``force``, ``prune``); keyword
        arguments override its fields.
    entries
        With ``force``: the entries whose every step is redone (default: all).
    progress
        Show progress bars.
    notify
        Hears what is redone and removed, one line per entry, before the work starts (default: printed to stderr
        when ``progress``).

    Returns
    -------
    StudyRun
        The study folder, its final state, the study table, the entries that failed, what was redone and removed.
    """
    assert options is not None  # takes_options always passes them
    t_start = time.perf_counter()
    notes: list[str] = []
    tell = notify or (_stderr if progress else (lambda text: None))
    if entries and not options.force:
        raise BadInput(f"entry names ({', '.join(entries)}) are for force: redo their steps with force=True "
                       "(--force)")
    spec = load_spec(study_file)
    forced = _forced(spec, (list(entries) if entries else True) if options.force else False)
    folder = StudyFolder(Path(out) if out is not None else Path("studies") / spec.name)
    folder.check_owner(spec)
    hashes = FileHashes(folder.hashes_file)
    inputs = {entry.name: entry_inputs(entry, hashes) for entry in spec.entries}  # also: every dataset opens
    with folder.writing("study run"):
        folder.adopt(spec)
        hashes.save()
        state, changes = update_state(spec, folder, inputs, forced, options.prune)
        for name in changes.pruned:
            shutil.rmtree(folder.atlas_path(name), ignore_errors=True)
        folder.write_state(state)
        for note in changes.notes:
            notes.append(note)
            tell(note)
        ray, jobs = options.ray, options.jobs
        executor = Inline() if ray is None and jobs == 1 else \
            RayTasks(ray, options.cpus_per_task or spec.threads, options.gpus_per_task) if ray is not None \
            else Processes(jobs)
        try:
            _schedule(spec, folder, state, executor, ray is not None, jobs, int(options.memory_budget_mb * 2**20),
                      progress)
        finally:
            folder.write_state(state)
            executor.close()
        from unitlens.study.summary import write_summary

        table = write_summary(folder)
    failed = {r["name"]: next(f"{s}: {st['error']}" for s, st in r["steps"].items() if st["status"] == "failed")
              for r in state["entries"] if entry_status(r) == "failed"}
    return StudyRun(folder.path, state, table, failed, time.perf_counter() - t_start, changes.redone,
                    changes.removed, notes)


def _schedule(spec: StudySpec, folder: StudyFolder, state: dict, executor, on_ray: bool, jobs: int,
              memory_budget: int, progress: bool) -> None:
    records = {r["name"]: r for r in state["entries"] if not r.get("removed")}
    inline = type(executor) is Inline
    study = str(folder.path.resolve())

    def task(step: str, entries: list[dict]) -> Task:
        redo = {r["name"]: r["steps"][step]["redo"].get("backend") for r in entries if "redo" in r["steps"][step]}
        return Task(step=step, entries=entries, study=study, share_embeddings=spec.share_embeddings,
                    memory_budget=memory_budget, progress=progress and inline, threads=spec.threads, redo=redo)

    queue: list[Task] = []
    need_record = [r for r in records.values() if _next_step(r) == "record"]
    queue += [task("record", g) for g in _record_groups(need_record, jobs, together=not on_ray)]
    queue += [task(s, [r]) for r in records.values() if (s := _next_step(r)) not in (None, "record")]

    def counts() -> tuple[int, int, int]:
        statuses = [entry_status(r) for r in records.values()]
        done, failed = statuses.count("done"), statuses.count("failed")
        return done, failed, len(statuses) - done - failed

    def describe(current: str = "") -> str:
        done, failed, left = counts()
        return f"study {spec.name}: {done} done, {failed} failed, {left} left" + (f" · {current}" if current else "")

    in_flight: dict = {}
    applied: set[tuple[str, str]] = set()  # (entry, step) outcomes taken in since the step was queued

    def apply(outcomes: list[dict]) -> None:
        before = sum(counts()[:2])
        for o in outcomes:
            if (o["entry"], o["step"]) in applied:
                continue
            applied.add((o["entry"], o["step"]))
            r = records[o["entry"]]
            r["steps"][o["step"]].update({k: o[k] for k in ("status", "error", "seconds", "result")})
            if o["status"] == "done":  # computed from its inputs now; a redo that failed is a redo again next time
                r["steps"][o["step"]].pop("redo", None)
            nxt = _next_step(r)
            if o["status"] == "done" and nxt is not None:
                queue.append(task(nxt, [r]))
        folder.write_state(state)
        bar.advance(sum(counts()[:2]) - before)
        bar.describe(describe())

    if inline:
        executor.report = apply
    with Progress(describe(), len(records), progress, completed=sum(counts()[:2]), unit="entry") as bar:
        while queue or in_flight:
            while queue and len(in_flight) < executor.capacity:
                t = queue.pop(0)
                for r in t.entries:
                    records[r["name"]]["steps"][t.step]["status"] = "running"
                    applied.discard((r["name"], t.step))
                folder.write_state(state)
                bar.describe(describe(f"{', '.join(r['name'] for r in t.entries)}: {t.step}"))
                try:
                    handle = executor.submit(t)
                except Exception as err:  # noqa: BLE001 - a task that could not even start fails its entries
                    handle = _failed_future(t, err)
                in_flight[handle] = t
            for handle in executor.wait(list(in_flight)):
                t = in_flight.pop(handle)
                try:
                    outcomes = executor.result(handle)
                except Exception as err:  # noqa: BLE001 - a worker that died (killed for memory, node lost)
                    outcomes = _failed_future(t, err).result()
                apply(outcomes)


def _failed_future(t: Task, err: BaseException) -> Future:
    from unitlens.study.steps import outcome

    future: Future = Future()
    future.set_result([outcome(r["name"], t.step, 0.0, err) for r in t.entries])
    return future
