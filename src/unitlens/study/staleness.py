"""``update_state(spec, folder, inputs, force, prune)``: the study's state (``study.json``) for the study file as it
is now, and what must be redone and why.

- A step keeps its state while its inputs (``unitlens.study.inputs``) are those it was computed from. A step whose
  inputs changed, or whose entry ``force`` names, is marked ``redo`` (the reasons, and the backend of the results it
  replaces): it starts again from nothing, and so does every step that reads its result. The mark stays until the
  step is done, so a redo that is interrupted is a redo again on the next run. Failed and interrupted steps are
  pending again (an interrupted record resumes from its checkpoint).
- An entry new in the file starts pending.
- An entry the file no longer has is kept with ``removed`` set (its atlas stays, the study table lists it as
  removed), unless ``prune``: then it is dropped and the runner deletes its atlas.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from unitlens.study.folder import FORMAT, STUDY_FILE, StudyFolder, entry_record
from unitlens.study.inputs import READS, what_changed
from unitlens.study.spec import StudySpec

FORCED = "--force"
READER = "reads the record"  # the reason of a step that reads a redone step's result


@dataclass
class Changes:
    """What a run redoes (entry -> steps, in order), the entries kept as removed or to delete, and the notes."""

    redone: dict[str, list[str]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _reasons(step: str, before: dict, now: dict, forced: bool, redone: dict[str, list[str]]) -> list[str]:
    """Why ``step`` must be redone (empty: it need not be)."""
    if forced:
        return [FORCED]
    if "inputs" in before:
        reasons = what_changed(before["inputs"], now["inputs"])
    else:  # a state written before steps kept their inputs: only a change of options is known
        reasons = what_changed({"options": before.get("options", {})}, {"options": now["options"]})
    return reasons + ([READER] if READS.get(step) in redone else [])


def _note(entry: str, redone: dict[str, list[str]]) -> str:
    """``entry e: record redone (k changed); mis, lens redone (they read the record)``."""
    groups: dict[str, list[str]] = {}
    for step, reasons in redone.items():
        groups.setdefault(", ".join(reasons), []).append(step)
    parts = []
    for text, steps in groups.items():
        reader = "it reads the record" if len(steps) == 1 else "they read the record"
        parts.append(f"{', '.join(steps)} redone ({text.replace(READER, reader)})")
    return f"entry {entry}: {'; '.join(parts)}"


def update_state(spec: StudySpec, folder: StudyFolder, inputs: dict[str, dict[str, dict]], force: set[str],
                 prune: bool) -> tuple[dict, Changes]:
    """The new state of ``folder`` for ``spec`` (see the module doc); ``inputs``: entry -> step -> its inputs;
    ``force``: the entries to redo whole."""
    old = {e["name"]: e for e in (folder.read_state().get("entries", []) if folder.state_file.is_file() else [])}
    changes = Changes()
    entries = []
    for entry in spec.entries:
        record = entry_record(entry, folder)
        known = old.get(entry.name, {}).get("steps", {})
        redone: dict[str, list[str]] = {}
        for step, st in record["steps"].items():
            st["inputs"] = inputs[entry.name][step]
            before = known.get(step)
            if before is None:
                continue
            st.update({k: before[k] for k in ("status", "error", "seconds", "result") if k in before})
            reasons = _reasons(step, before, st, entry.name in force, redone)
            if before.get("redo") or (reasons and before["status"] != "pending"):  # results to discard
                st["redo"] = {"why": reasons or before["redo"]["why"],
                              "backend": (before.get("redo") or {}).get("backend") or
                              before.get("result", {}).get("backend")}
                st["status"] = "pending"
                redone[step] = st["redo"]["why"]
            if st["status"] in ("running", "failed"):  # interrupted or failed before: run it again
                st["status"], st["error"] = "pending", ""
        if redone:
            changes.redone[entry.name] = list(redone)
            changes.notes.append(_note(entry.name, redone))
        entries.append(record)
    for name, record in old.items():
        if name in inputs:
            continue
        if prune:
            changes.pruned.append(name)
            changes.notes.append(f"entry {name} is not in the study file: its atlas is deleted (--prune)")
            continue
        entries.append({**record, "removed": True})
        changes.removed.append(name)
        changes.notes.append(f"entry {name} is not in the study file any more: its atlas is kept (status removed); "
                             "unitlens study run --prune deletes it")
    state = {"format": FORMAT, "name": spec.name, "study_file": STUDY_FILE, "threads": spec.threads,
             "entries": entries}
    return state, changes
