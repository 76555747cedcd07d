"""The study folder: where a study's file, state, table, atlases, shared embeddings and figures live.

Layout::

    study.toml              the study file as given (copied in on the first run)
    study.json              resolved entries and the runner's state per entry and step (written atomically)
    study.parquet           the study table (``unitlens study summary``), one row per entry
    atlases/<entry>/        one ordinary atlas per entry
    embeddings/<data>/...   image embeddings shared by the entries on the same images (see ``study.embeddings``)
    figures/                default output of ``unitlens plot study``

``study.json``::

    {"format": 1, "name": ..., "study_file": "study.toml", "updated": <unix time>,
     "entries": [{"name", "model", "random", "checkpoint", "epoch", "accuracy", "accuracy_source", "data",
                  "layers", "types", "exclude", "keep_first_last", "atlas": "atlases/<name>",
                  "steps": {"record": {"options": {...}, "status": "pending|running|done|failed",
                                       "error": "", "seconds": 0.0}, ...}}]}
"""
from __future__ import annotations

import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path

from unitlens.atlas.files import atomic_write, read_json, write_json
from unitlens.atlas.lock import writing
from unitlens.errors import BadInput, NotComputed
from unitlens.study.spec import Entry, StudySpec, read_toml

STUDY_FILE = "study.toml"
STATE_FILE = "study.json"
TABLE_FILE = "study.parquet"
ATLASES = "atlases"
EMBEDDINGS = "embeddings"
FIGURES = "figures"
FORMAT = 1
STATUSES = ("pending", "running", "done", "failed")


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
    def figures(self) -> Path:
        return self.path / FIGURES

    @property
    def embeddings(self) -> Path:
        return self.path / EMBEDDINGS

    def atlas_path(self, entry: str) -> Path:
        return self.path / ATLASES / entry

    def writing(self, command: str) -> AbstractContextManager:
        """The study folder's write lock (the same lock file as an atlas's)."""
        return writing(self.path, command)

    # ------------------------------------------------------------------ the study file
    def adopt(self, spec: StudySpec) -> None:
        """Copy the study file in on the first run; a folder that holds another study is an error."""
        if self.study_file.is_file():
            if self.study_file.resolve() == spec.path.resolve():
                return
            if read_toml(self.study_file) != spec.table:
                raise BadInput(f"{self.path} holds another study ({self.study_file} differs from {spec.path}); use "
                               f"another --out, or run the folder's own file: unitlens study run {self.study_file} "
                               f"--out {self.path}")
            return
        if self.path.exists() and any(p.name not in (".lock",) for p in self.path.iterdir()):
            raise BadInput(f"{self.path} exists and is not a study folder (no {STUDY_FILE}); choose another --out or "
                           "empty it")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.study_file, lambda tmp: shutil.copyfile(spec.path, tmp))

    # ------------------------------------------------------------------ the state
    def read_state(self) -> dict:
        if not self.state_file.is_file():
            raise NotComputed(f"{self.path} is not a study folder (no {STATE_FILE}); create it with unitlens study "
                              f"run STUDY.toml --out {self.path}")
        return read_json(self.state_file)

    def write_state(self, state: dict) -> None:
        write_json(self.state_file, {**state, "updated": time.time()})

    def new_state(self, spec: StudySpec) -> dict:
        """The state for ``spec``'s entries, keeping the step states of entries an earlier run knew unchanged."""
        old = {e["name"]: e for e in (read_json(self.state_file).get("entries", [])
                                      if self.state_file.is_file() else [])}
        entries = []
        for entry in spec.entries:
            record = entry_record(entry, self)
            before = old.get(entry.name)
            if before is not None and _definition(before) == _definition(record):
                for step, st in record["steps"].items():
                    old_step = before.get("steps", {}).get(step)
                    if old_step is not None and old_step.get("options") == st["options"]:
                        st.update({k: old_step[k] for k in ("status", "error", "seconds", "result") if k in old_step})
            entries.append(record)
        return {"format": FORMAT, "name": spec.name, "study_file": STUDY_FILE, "entries": entries}


def entry_record(entry: Entry, folder: StudyFolder) -> dict:
    """An entry as ``study.json`` holds it: its definition and a pending state for each step."""
    d = entry.as_dict()
    options = d.pop("options")
    d["atlas"] = str(folder.atlas_path(entry.name).relative_to(folder.path))
    options["accuracy"] = {"folder": entry.accuracy_folder} if entry.accuracy_folder else {}
    d["steps"] = {step: {"options": options.get(step, {}), "status": "pending", "error": "", "seconds": 0.0}
                  for step in entry.run_steps}
    return d


# what the atlas of an entry depends on; its accuracy and epoch are labels that may change (a rewritten sidecar)
_LABELS = ("accuracy", "accuracy_source", "accuracy_folder", "epoch", "steps")


def _definition(record: dict) -> dict:
    """What an entry's atlas is made from: when it changes, every step of the entry starts again."""
    return {k: v for k, v in record.items() if k not in _LABELS}


def entry_of(record: dict) -> Entry:
    """The ``Entry`` a ``study.json`` record describes."""
    options = {s: st.get("options", {}) for s, st in record["steps"].items() if s != "accuracy"}
    return Entry.from_dict({**record, "options": options})


def entry_status(record: dict) -> str:
    """failed if a step failed, done if all are done, running if one runs, else pending."""
    statuses = [st["status"] for st in record["steps"].values()]
    if "failed" in statuses:
        return "failed"
    if all(s == "done" for s in statuses):
        return "done"
    return "running" if "running" in statuses else "pending"
