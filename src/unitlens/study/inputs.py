"""``entry_inputs(entry, hashes)``: what each step of a study entry is computed from; ``what_changed(old, new)``:
how two such records differ, in words.

A step's inputs are everything its result depends on: the model (name, random init, the content of its checkpoint
or module file), the images (the dataset's fingerprint, from the bytes of every file), the layer selection, the
step's options (but those that only trade speed for memory), and the inputs of the steps whose results it reads
(MIS and lens read the record's atlas). The runner redoes a step whose inputs differ from those it was computed
from, and every step that reads its result. Pretrained weights are known by the model's name (a timm tag fixes
them) and random ones are seeded, so the name stands for them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from unitlens.errors import BadInput, UnitlensError
from unitlens.study.hashes import FileHashes
from unitlens.study.spec import Entry

READS = {"mis": "record", "lens": "record", "featviz": "record"}  # step -> the step whose result it reads
# options that change how fast and in how much memory a step runs, never its result (so documented by the step:
# unitlens.recording.options.RecordOptions)
SPEED_ONLY = {"record": {"batch_size", "num_workers", "checkpoint_every", "merge_every", "micro_batch", "device"},
              "featviz": {"batch_size", "device"}}
MODEL_FILE_SUFFIXES = {".pt", ".pth", ".ts", ".jit"}
WORDS = {"checkpoint": "checkpoint content changed", "model_file": "model file content changed",
         "images": "images changed", "accuracy_images": "accuracy images changed"}


def digest(inputs: dict) -> str:
    """A short hash of an inputs record (what a dependent step keeps of the step it reads)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(hashes: FileHashes, path: str, what: str) -> str:
    found = hashes.files([path])[0]
    if found is None:
        raise BadInput(f"cannot read the {what} {path}; restore it or remove the entry from the study file")
    return found


def entry_inputs(entry: Entry, hashes: FileHashes) -> dict[str, dict]:
    """Step -> the inputs of that step of ``entry`` (the steps it runs, in order); an unreadable dataset,
    checkpoint or model file is a ``BadInput`` naming the entry."""
    try:
        return _inputs(entry, hashes)
    except UnitlensError as err:
        raise BadInput(f"entry {entry.name}: {err}") from err


def _inputs(entry: Entry, hashes: FileHashes) -> dict[str, dict]:
    model = {"model": entry.model, "random": entry.random}
    if entry.checkpoint:
        model["checkpoint"] = _file_hash(hashes, entry.checkpoint, "checkpoint")
    if Path(entry.model).suffix in MODEL_FILE_SUFFIXES:
        model["model_file"] = _file_hash(hashes, entry.model, "model file")
    record_options = entry.options.get("record", {})
    content_hash = record_options.get("content_hash")
    definition = entry.as_dict()
    record = {**model, "data": entry.data, "images": hashes.dataset(entry.data, content_hash is not False),
              **{key: definition[key] for key in ("layers", "types", "exclude", "keep_first_last")},
              "options": {k: v for k, v in record_options.items() if k not in SPEED_ONLY["record"]}}
    out: dict[str, dict] = {}
    for step in entry.run_steps:
        if step == "record":
            out[step] = record
        elif step == "accuracy":
            assert entry.accuracy_folder is not None  # the step exists only for entries measured on a folder
            out[step] = {**model, "folder": entry.accuracy_folder,
                         "accuracy_images": hashes.dataset(entry.accuracy_folder)}
        else:
            out[step] = {READS[step]: digest(out[READS[step]]), "options": entry.options.get(step, {})}
    return json.loads(json.dumps(out, default=str))  # as study.json gives it back


def what_changed(old: dict, new: dict) -> list[str]:
    """The differences between two inputs records of one step, in words (``k changed``, ``images changed``); a
    change of the step it reads is left out (the runner names that)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key) or key in READS.values():
            continue
        if key == "options":
            a, b = old.get(key) or {}, new.get(key) or {}
            out += [f"{k} changed" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(WORDS.get(key, f"{key} changed"))
    return out
