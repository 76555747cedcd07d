"""``StudyView``: a study folder as the explorer shows it (the layout ``unitlens study run`` writes)::

    study.toml          the study file (its ``name``)
    study.json          the entries and the status of each entry's steps
    study.parquet       one row per entry: entry, model, checkpoint, epoch, accuracy, units, MIS mean/p5/p95, ...
    atlases/<entry>/    one ordinary atlas per entry
    figures/*.png       the study figures (unitlens plot study)

Everything is read as it is (the study table checked by ``unitlens.study.summary.read_table``: a damaged or
foreign one is an error naming the file and its fix); the view ranks the entries by MIS mean when the table has it.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from unitlens.atlas.files import read_json
from unitlens.atlas.layout import MANIFEST
from unitlens.errors import CorruptFile
from unitlens.explorer.paths import figure_files

STUDY_FILES = ("study.toml", "study.json", "study.parquet")
FRONT_END = {"entry": "name", "constant_units": "constant", "mis_worst5": "mis_worst5_mean"}  # table -> page names


def is_study(path: str | Path) -> bool:
    """A folder with a study file (``study.toml``, ``study.json`` or ``study.parquet``)."""
    return any((Path(path) / f).is_file() for f in STUDY_FILES)


def _plain(value):
    """A table value as JSON: NaN -> None, numpy scalars -> Python, lists kept."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class StudyView:
    """One study folder; ``atlas_names`` maps entry names to the names their atlases are served under."""

    def __init__(self, path: str | Path, name: str):
        self.path = Path(path)
        self.name = name
        self.atlas_names: dict[str, str] = {}

    @property
    def title(self) -> str:
        toml = self.path / "study.toml"
        if toml.is_file():
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10: the folder's name
                return self.path.name
            try:
                return str(tomllib.loads(toml.read_text()).get("name", self.path.name))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
                raise CorruptFile(f"{toml} is not a readable study file ({err}); fix it or run unitlens study run "
                                  "again") from err
        return self.path.name

    def atlas_folders(self) -> dict[str, Path]:
        """Entry name -> atlas folder, for the entries whose atlas exists (a linked atlas folder is served as the
        atlas it is: only files inside it)."""
        root = self.path / "atlases"
        if not root.is_dir():
            return {}
        return {p.name: p for p in sorted(root.iterdir()) if (p / MANIFEST).is_file()}

    @property
    def figures(self) -> dict[str, Path]:
        return figure_files(self.path, [self.path / "figures"])

    def table(self) -> pd.DataFrame:
        from unitlens.study.summary import read_table

        if not (self.path / "study.parquet").is_file():
            return pd.DataFrame()
        table = read_table(self.path).rename(columns=FRONT_END)
        if "mis_mean" in table:
            table = table.sort_values("mis_mean", ascending=False, kind="stable", na_position="last")
        return table.reset_index(drop=True)

    def status(self) -> dict:
        path = self.path / "study.json"
        if not path.is_file():
            return {}
        return read_json(path, fix="run unitlens study run again")

    def payload(self) -> dict:
        table = self.table()
        entries = {str(e.get("name", i)): e for i, e in enumerate(self.status().get("entries", []))
                   if isinstance(e, dict)}
        rows = [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")]
        names = [str(r.get("name", "")) for r in rows]
        for name in entries:
            if name not in names:  # an entry without a summary row yet (running)
                rows.append({"name": name})
        for row in rows:
            row["atlas"] = self.atlas_names.get(str(row.get("name")))
            steps = entries.get(str(row.get("name")), {}).get("steps", {})
            row["status"] = {step: st.get("status") for step, st in steps.items()}
            failed = [f"{step}: {st.get('error', '')}" for step, st in steps.items() if st.get("status") == "failed"]
            if failed:
                row["error"] = failed[0]
        return {"name": self.name, "title": self.title, "path": str(self.path), "columns": list(table.columns),
                "entries": rows, "figures": sorted(self.figures)}
