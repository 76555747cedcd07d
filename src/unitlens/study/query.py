"""``connect(folder)``: a DuckDB connection over a study, with three views.

- ``units``: every entry's ``units.parquet`` (layer, unit, type, depth, rel_depth, width, rel_width, n, min, max,
  mean, std, nonfinite, constant), with an ``entry`` column first;
- ``scores``: every entry's ``scores.parquet`` (layer, unit, metric, backend, value, params), with ``entry``;
- ``study``: the study table (``study.parquet``, written by ``unitlens study summary``).

Entries whose atlas is not complete (or has no scores) are left out of ``units`` (``scores``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from unitlens.atlas import Atlas
from unitlens.atlas.layout import UNITS
from unitlens.errors import BadInput, UnitlensError
from unitlens.study.folder import StudyFolder

EMPTY = {
    "units": "SELECT ''::VARCHAR AS entry, ''::VARCHAR AS layer, 0::BIGINT AS unit, ''::VARCHAR AS type, "
             "0::BIGINT AS depth, 0.0::DOUBLE AS rel_depth, 0::BIGINT AS width, 0.0::DOUBLE AS rel_width, "
             "0::BIGINT AS n, 0.0::FLOAT AS min, 0.0::FLOAT AS max, 0.0::DOUBLE AS mean, 0.0::DOUBLE AS std, "
             "0::BIGINT AS nonfinite, false AS constant WHERE false",
    "scores": "SELECT ''::VARCHAR AS entry, ''::VARCHAR AS layer, 0::BIGINT AS unit, ''::VARCHAR AS metric, "
              "''::VARCHAR AS backend, 0.0::DOUBLE AS value, ''::VARCHAR AS params WHERE false",
}


def _literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _union(files: list[tuple[str, Path]], view: str) -> str:
    if not files:
        return EMPTY[view]
    return " UNION ALL BY NAME ".join(f"SELECT {_literal(entry)} AS entry, * FROM read_parquet({_literal(str(path))})"
                                      for entry, path in files)


def connect(folder: StudyFolder | str | Path):
    """An in-memory DuckDB connection with the views ``units``, ``scores`` and ``study`` of the study folder."""
    import duckdb

    folder = folder if isinstance(folder, StudyFolder) else StudyFolder(folder)
    state = folder.read_state()
    units, scores = [], []
    for record in state["entries"]:
        path = folder.path / record["atlas"]
        try:
            atlas = Atlas(path)
        except UnitlensError:
            continue
        if not atlas.complete:
            continue
        units.append((record["name"], (path / UNITS).resolve()))
        if atlas.derived_path("scores").is_file():
            scores.append((record["name"], atlas.derived_path("scores").resolve()))
    con = duckdb.connect()
    con.execute(f"CREATE VIEW units AS {_union(units, 'units')}")
    con.execute(f"CREATE VIEW scores AS {_union(scores, 'scores')}")
    if folder.table_file.is_file():
        con.execute(f"CREATE VIEW study AS SELECT * FROM read_parquet({_literal(str(folder.table_file.resolve()))})")
    else:
        from unitlens.study.summary import summarize

        con.register("study", summarize(folder))
    return con


def query(folder: StudyFolder | str | Path, sql: str) -> pd.DataFrame:
    """The result of ``sql`` over the views ``units``, ``scores`` and ``study`` (see the module doc)."""
    import duckdb

    con = connect(folder)
    try:
        return con.execute(sql).df()
    except duckdb.Error as err:
        raise BadInput(f"the query failed: {err}. Views: units, scores, study (see README, Studies)") from err
    finally:
        con.close()

