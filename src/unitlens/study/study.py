"""``Study.load(dir)``: a study folder from Python: its entries, their atlases, the study table and SQL over it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from unitlens.atlas import Atlas
from unitlens.errors import BadInput
from unitlens.study.folder import StudyFolder, entry_of, entry_status
from unitlens.study.spec import Entry


@dataclass(frozen=True)
class StudyEntry:
    """One entry as the study folder knows it: its definition, where its atlas is, and the state of its steps."""

    entry: Entry
    atlas_path: Path
    status: str  # pending | running | done | failed
    steps: dict  # step -> {"options", "status", "error", "seconds", "result"}

    @property
    def name(self) -> str:
        return self.entry.name


class Study:
    """A study folder (``unitlens study run``). ``entries``, ``atlas(entry)``, ``summary()``, ``query(sql)``."""

    def __init__(self, path: str | Path):
        self.folder = StudyFolder(path)
        self.path = self.folder.path
        self.state = self.folder.read_state()
        self.name = self.state.get("name", self.path.name)

    @classmethod
    def load(cls, path: str | Path) -> "Study":
        return cls(path)

    @property
    def entries(self) -> list[StudyEntry]:
        return [StudyEntry(entry_of(r), self.path / r["atlas"], entry_status(r), r["steps"])
                for r in self.state["entries"]]

    def entry(self, name: str | StudyEntry) -> StudyEntry:
        if isinstance(name, StudyEntry):
            return name
        for e in self.entries:
            if e.name == name:
                return e
        raise BadInput(f"study {self.path} has no entry '{name}'; it has {', '.join(e.name for e in self.entries)}")

    def atlas(self, entry: str | StudyEntry) -> Atlas:
        """The atlas of an entry (an ordinary atlas: every unitlens step works on it)."""
        return Atlas(self.entry(entry).atlas_path)

    def summary(self, write: bool = False) -> pd.DataFrame:
        """The study table (one row per entry) computed from the atlases now; ``write`` also writes study.parquet."""
        from unitlens.study.summary import summarize, write_summary

        return write_summary(self.folder) if write else summarize(self.folder)

    def _repr_html_(self) -> str:
        from unitlens.notebook import header, table

        entries = self.entries
        statuses = [e.status for e in entries]
        facts: dict[str, object] = {"folder": self.path, "entries": len(entries),
                 **{s: statuses.count(s) for s in ("done", "running", "pending", "failed") if s in statuses}}
        rows = pd.DataFrame([{"entry": e.name, "model": e.entry.model, "checkpoint": e.entry.checkpoint or "",
                              "status": e.status,
                              "steps done": ", ".join(s for s, st in e.steps.items() if st.get("status") == "done")}
                             for e in entries])
        return header(f"study {self.name}", facts) + table(rows, "entries", max_rows=50)

    def query(self, sql: str) -> pd.DataFrame:
        """DuckDB SQL over the views ``units``, ``scores`` and ``study`` (see ``unitlens.study.query``)."""
        from unitlens.study.query import query

        return query(self.folder, sql)
