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
        """The entry's name (unique in its study)."""
        return self.entry.name


class Study:
    """A study folder (``unitlens study run``). ``entries``, ``atlas(entry)``, ``summary()``, ``query(sql)``.

    Parameters
    ----------
    path : str or Path
        The study folder (holding its state file and one atlas per entry).
    """

    def __init__(self, path: str | Path):
        self.folder = StudyFolder(path)
        self.path = self.folder.path
        self.state = self.folder.read_state()
        self.name = self.state.get("name", self.path.name)

    @classmethod
    def load(cls, path: str | Path) -> "Study":
        """Open the study folder at ``path`` (the same as ``Study(path)``).

        Parameters
        ----------
        path : str or Path
            The study folder.

        Returns
        -------
        Study
            The study as its state file describes it now.
        """
        return cls(path)

    @property
    def entries(self) -> list[StudyEntry]:
        """Every entry of the study in order: its definition, atlas folder, status and per-step state."""
        return [StudyEntry(entry_of(r), self.path / r["atlas"], entry_status(r), r["steps"])
                for r in self.state["entries"]]

    def entry(self, name: str | StudyEntry) -> StudyEntry:
        """One entry of the study.

        Parameters
        ----------
        name : str or StudyEntry
            The entry's name (an entry is returned as it is).

        Returns
        -------
        StudyEntry
            Its definition, atlas folder, status (pending, running, done, failed) and per-step state.

        Raises
        ------
        BadInput
            If the study has no such entry (the message lists its entries).
        """
        if isinstance(name, StudyEntry):
            return name
        for e in self.entries:
            if e.name == name:
                return e
        raise BadInput(f"study {self.path} has no entry '{name}'; it has {', '.join(e.name for e in self.entries)}")

    def atlas(self, entry: str | StudyEntry) -> Atlas:
        """The atlas of an entry (an ordinary atlas: every unitlens step works on it).

        Parameters
        ----------
        entry : str or StudyEntry
            The entry or its name.

        Returns
        -------
        Atlas
            The entry's atlas.

        Raises
        ------
        BadInput
            If the study has no such entry.
        """
        return Atlas(self.entry(entry).atlas_path)

    def summary(self, write: bool = False) -> pd.DataFrame:
        """The study table computed from the atlases now.

        Parameters
        ----------
        write : bool
            Also write it to ``study.parquet`` in the study folder (atomically).

        Returns
        -------
        pandas.DataFrame
            One row per entry: its definition, status and per-entry results (see ``unitlens.study.summary``).
        """
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
        """DuckDB SQL over the views ``units``, ``scores`` and ``study`` (see ``unitlens.study.query``).

        ``units`` and ``scores`` are every entry's tables with an ``entry`` column first; ``study`` is the study
        table. Queries only read.

        Parameters
        ----------
        sql : str
            One or more ``SELECT`` statements.

        Returns
        -------
        pandas.DataFrame
            The result of the last statement.

        Raises
        ------
        BadInput
            If a statement is not a ``SELECT`` (nothing runs then), or the query fails.
        """
        from unitlens.study.query import query

        return query(self.folder, sql)
