"""The study folder: where a study's file, state, table, atlases, shared embeddings and figures live.

Layout::

    study.toml              the study file of the last run (copied in from the user's file: the record of what ran)
    study.json              resolved entries and the runner's state per entry and step (written atomically)
    study.parquet           the study table (``unitlens study summary``), one row per entry, stamped
    hashes.parquet          content hashes of the files the study reads (``unitlens.study.hashes``; a cache)
    atlases/<entry>/        one ordinary atlas per entry
    embeddings/<data>/...   image embeddings shared by the entries on the same images (see ``study.embeddings``)
    figures/                default output of ``unitlens plot study``

``study.json``::

    {"format": 2, "name": ..., "study_file": "study.toml", "threads": 1, "updated": <unix time>,
     "entries": [{"name", "model", "random", "checkpoint", "epoch", "accuracy", "accuracy_source", "data",
                  "layers", "types", "exclude", "keep_first_last", "atlas": "atlases/<name>", ["removed": true,]
                  "steps": {"record": {"options": {...}, "inputs": {...}, "status": "pending|running|done|failed",
                                       "error": "", "seconds": 0.0, "result": {...},
                                       ["redo": {"why": [...], "backend": ...}]}, ...}}]}

``inputs`` is what the step is computed from (``unitlens.study.inputs``), ``redo`` marks a step that must start
again from nothing (``unitlens.study.staleness``), ``removed`` an entry the study file no longer has.
"""
from __future__ import annotations

import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path

from unitlens.atlas.files import atomic_write, read_json, write_json
from unitlens.atlas.layout import LOCK
from unitlens.atlas.lock import writing
from unitlens.errors import BadInput, NotComputed
from unitlens.study.spec import Entry, StudySpec, read_toml

STUDY_FILE = "study.toml"
STATE_FILE = "study.json"
TABLE_FILE = "study.parquet"
ATLASES = "atlases"
EMBEDDINGS = "embeddings"
FIGURES = "figures"
HASHES_FILE = "hashes.parquet"
FORMAT = 2
STATUSES = ("pending", "running", "done", "failed", "removed")


class StudyFolder:
    """Paths of a study folder and its state file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def study_file(self) -> Path:
        return self.path / STUDY_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def table_file(self) -> Path:
        return self.path / TABLE_FILE

    @property
    def hashes_file(self) -> Path:
        return self.path / HASHES_FILE

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    @property
    def embeddings(self) -> Path:
        return self.path / EMBEDDINGS

    def atlas_path(self, entry: str) -> Path:
        return self.path / ATLASES / entry

    def writing(self, command: str) -> AbstractContextManager:
        """The study folder's write lock (the same kind of lock file as an atlas's)."""
        return writing(self.path, command, what="study folder")

    # ------------------------------------------------------------------ the study file
    def check_owner(self, spec: StudySpec) -> None:
        """Refuse a folder that holds another study (another name) or something else than a study, before any
        work; an edited study file of the same name is the study as it is now."""
        if self.study_file.is_file():
            held = self.read_state().get("name") if self.state_file.is_file() else \
                read_toml(self.study_file).get("name", self.study_file.stem)
            if held != spec.name:
                raise BadInput(f"{self.path} holds the study '{held}', not '{spec.name}' (the name in {spec.path}); "
                               f"give another --out, or keep the name '{held}' in the study file")
        elif self.path.exists() and any(p.name != LOCK for p in self.path.iterdir()):
            raise BadInput(f"{self.path} exists and is not a study folder (no {STUDY_FILE}); choose another --out or "
                           "empty it")

    def adopt(self, spec: StudySpec) -> None:
        """Copy the study file in (the record of what ran), unless it is the folder's own."""
        if not (self.study_file.is_file() and self.study_file.resolve() == spec.path.resolve()):
            atomic_write(self.study_file, lambda tmp: shutil.copyfile(spec.path, tmp))

    # ------------------------------------------------------------------ the state
    def read_state(self) -> dict:
        if not self.state_file.is_file():
            raise NotComputed(f"{self.path} is not a study folder (no {STATE_FILE}); create it with unitlens study "
                              f"run STUDY.toml --out {self.path}")
        return read_json(self.state_file)

    def write_state(self, state: dict) -> None:
        write_json(self.state_file, {**state, "updated": time.time()})


def entry_record(entry: Entry, folder: StudyFolder) -> dict:
    """An entry as ``study.json`` holds it: its definition and a pending state for each step."""
    d = entry.as_dict()
    options = d.pop("options")
    d["atlas"] = str(folder.atlas_path(entry.name).relative_to(folder.path))
    options["accuracy"] = {"folder": entry.accuracy_folder} if entry.accuracy_folder else {}
    d["steps"] = {step: {"options": options.get(step, {}), "status": "pending", "error": "", "seconds": 0.0}
                  for step in entry.run_steps}
    return d


def entry_of(record: dict) -> Entry:
    """The ``Entry`` a ``study.json`` record describes."""
    options = {s: st.get("options", {}) for s, st in record["steps"].items() if s != "accuracy"}
    return Entry.from_dict({**record, "options": options})


def entry_status(record: dict) -> str:
    """removed if the study file no longer has it; else failed if a step failed, done if all are done, running if
    one runs, else pending."""
    if record.get("removed"):
        return "removed"
    statuses = [st["status"] for st in record["steps"].values()]
    if "failed" in statuses:
        return "failed"
    if all(s == "done" for s in statuses):
        return "done"
    return "running" if "running" in statuses else "pending"
