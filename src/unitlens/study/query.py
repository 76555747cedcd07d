"""``connect(folder)``: a read-only DuckDB connection over a study, with three views, and ``query(folder, sql)``.

- ``units``: every entry's ``units.parquet`` (layer, unit, type, depth, rel_depth, width, rel_width, n, min, max,
  mean, std, nonfinite, constant), with an ``entry`` column first;
- ``scores``: every entry's ``scores.parquet`` (layer, unit, metric, backend, value, params), with ``entry``;
- ``study``: the study table (``study.parquet``, checked as ``unitlens.study.summary.read_table`` does; computed
  from the atlases when the file is missing or lists other entries than the study has now).

Entries whose atlas is not complete (or has no scores) are left out of ``units`` (``scores``), and so are entries the
study file no longer has (the ``study`` view lists them as removed).

Queries only read: ``query`` runs one or more ``SELECT`` statements and refuses any other (COPY, CREATE, ATTACH,
INSTALL, LOAD, SET, PRAGMA, ...) before running anything. The connection itself is locked down with DuckDB's own
settings once the views exist: external access off (no file, URL or database beyond the views' Parquet files,
which are the only ``allowed_paths``), no extension installed or loaded, no Python objects scanned by name, and the
configuration locked so that no query can turn any of it back on. The study table is handed to DuckDB as a data
frame, so no query can reach, let alone overwrite, ``study.parquet``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from unitlens.atlas import Atlas
from unitlens.atlas.layout import UNITS
from unitlens.errors import BadInput, Unavailable, UnitlensError
from unitlens.study.folder import StudyFolder

EMPTY = {
    "units": "SELECT ''::VARCHAR AS entry, ''::VARCHAR AS layer, 0::BIGINT AS unit, ''::VARCHAR AS type, "
             "0::BIGINT AS depth, 0.0::DOUBLE AS rel_depth, 0::BIGINT AS width, 0.0::DOUBLE AS rel_width, "
             "0::BIGINT AS n, 0.0::FLOAT AS min, 0.0::FLOAT AS max, 0.0::DOUBLE AS mean, 0.0::DOUBLE AS std, "
             "0::BIGINT AS nonfinite, false AS constant WHERE false",
    "scores": "SELECT ''::VARCHAR AS entry, ''::VARCHAR AS layer, 0::BIGINT AS unit, ''::VARCHAR AS metric, "
              "''::VARCHAR AS backend, 0.0::DOUBLE AS value, ''::VARCHAR AS params WHERE false",
}
# DuckDB settings applied, in order, once the views exist (allowed_paths first: it cannot change afterwards)
LOCKDOWN = ("enable_external_access = false", "autoinstall_known_extensions = false",
            "autoload_known_extensions = false", "allow_community_extensions = false",
            "python_enable_replacements = false", "lock_configuration = true")
VIEWS = "Views: units, scores, study (see the studies guide, SQL views)"


def _literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _union(files: list[tuple[str, Path]], view: str) -> str:
    if not files:
        return EMPTY[view]
    return " UNION ALL BY NAME ".join(f"SELECT {_literal(entry)} AS entry, * FROM read_parquet({_literal(str(path))})"
                                      for entry, path in files)


def study_table(folder: StudyFolder) -> pd.DataFrame:
    """``study.parquet`` when it is there and lists the study's entries now, else the table computed now."""
    from unitlens.study.summary import read_table, summarize

    if folder.table_file.is_file():
        table = read_table(folder)
        if list(table["entry"]) == [r["name"] for r in folder.read_state()["entries"]]:
            return table
    return summarize(folder)


def connect(folder: StudyFolder | str | Path):
    """An in-memory, locked-down DuckDB connection with the views ``units``, ``scores`` and ``study``."""
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
        if record.get("removed") or not atlas.complete:
            continue
        units.append((record["name"], (path / UNITS).resolve()))
        if atlas.derived_path("scores").is_file():
            scores.append((record["name"], atlas.derived_path("scores").resolve()))
    table = study_table(folder)
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"CREATE VIEW units AS {_union(units, 'units')}")
        con.execute(f"CREATE VIEW scores AS {_union(scores, 'scores')}")
        con.register("study", table)
        con.execute(f"SET allowed_paths = [{', '.join(_literal(str(p)) for _, p in units + scores)}]")
        for setting in LOCKDOWN:
            con.execute(f"SET {setting}")
    except duckdb.CatalogException as err:  # a DuckDB without one of the settings (allowed_paths came in 1.2)
        con.close()
        raise Unavailable(f"study queries need DuckDB 1.2 or newer ({err}); pip install -U duckdb") from err
    return con


def check_read_only(sql: str) -> None:
    """Refuse ``sql`` unless each of its statements is a query (SELECT, WITH, FROM, VALUES, DESCRIBE, ...)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise BadInput(f"the query failed: {err}. {VIEWS}") from err
    if not statements:
        raise BadInput(f"the query is empty; give a SELECT statement. {VIEWS}")
    for statement in statements:
        if statement.type != duckdb.StatementType.SELECT:
            kind = (statement.query.split() or [statement.type.name])[0].strip(";").upper()
            raise BadInput(f"study queries only read: {kind} is not a query; use SELECT over the views units, scores "
                           "and study (copy results out with --format csv or in Python)")


def query(folder: StudyFolder | str | Path, sql: str) -> pd.DataFrame:
    """The result of ``sql`` (queries only: see the module doc) over the views ``units``, ``scores`` and
    ``study``; the last statement's rows."""
    import duckdb

    check_read_only(sql)
    con = connect(folder)
    try:
        return con.execute(sql).df()
    except duckdb.PermissionException as err:
        raise BadInput(f"study queries only read the views units, scores and study, no other file, URL or extension "
                       f"({str(err).splitlines()[0]})") from err
    except duckdb.Error as err:
        raise BadInput(f"the query failed: {err}. {VIEWS}") from err
    finally:
        con.close()
