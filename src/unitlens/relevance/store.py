"""The relevance results of an atlas, under ``<atlas>/relevance/`` (every file written atomically).

Files::

    class_<index>.parquet / .json   per unit: layer, unit, class_index, class_name, rel_mean, rel_max,
                                    rel_raw_mean, n_samples, top_ids (sample ids, highest share first); meta:
                                    composite, sample rule, data and its fingerprint, conservation per layer
    predicted.parquet / .json       per unit its top classes by mean share over the samples predicted as that
                                    class: layer, unit, rank, class_index, class_name, rel_mean, rel_max, ...
    predictions_<data>_<weights>.parquet   top-5 predictions of every sample (cache)

``load_relevance(atlas, cls)`` and ``relevant_classes(atlas, layer)`` read them back. Every meta carries the
atlas's identity (``atlas``): a result copied from another atlas is refused, a damaged file named.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import read_json, read_parquet, write_json, write_parquet
from unitlens.errors import RelevanceNotComputed

CLASS_COLUMNS = ["layer", "unit", "class_index", "class_name", "rel_mean", "rel_max", "rel_raw_mean", "n_samples",
                 "top_ids"]


def folder(atlas: Atlas | str | Path) -> Path:
    """The folder of an atlas's relevance results (``relevance/``; nothing is created)."""
    return Atlas.open(atlas).derived_path("relevance")


def _fix(atlas: Atlas, stem: str) -> str:
    how = "--predicted" if stem == "predicted" else f"--class {stem.split('_', 1)[-1]}"
    return f"delete {folder(atlas) / stem}.* and compute it again: unitlens relevance {atlas.path} {how}"


def write_result(atlas, stem: str, frame: pd.DataFrame, meta: dict) -> Path:
    """Write ``<stem>.parquet`` and its ``<stem>.json`` meta (stamped with the atlas's identity); the table last, so
    a table always has its meta."""
    atlas = Atlas.open(atlas)
    base = folder(atlas)
    write_json(base / f"{stem}.json", {**meta, "atlas": atlas.identity()})
    write_parquet(base / f"{stem}.parquet", frame)
    return base / f"{stem}.parquet"


def _checked_meta(atlas: Atlas, stem: str) -> dict:
    """The meta of result ``stem`` ({} if it has none), refused if it belongs to another atlas."""
    path = folder(atlas) / f"{stem}.json"
    if not path.is_file():
        return {}
    meta = read_json(path, fix=_fix(atlas, stem))
    atlas.check_identity(meta.get("atlas"), f"the relevance result {path}", _fix(atlas, stem))
    return meta


def _read(atlas: Atlas, stem: str) -> pd.DataFrame:
    _checked_meta(atlas, stem)
    return read_parquet(folder(atlas) / f"{stem}.parquet", fix=_fix(atlas, stem))


def stored_classes(atlas) -> pd.DataFrame:
    """One row per class with stored relevance: class_index, class_name, description, samples rule, n_samples."""
    atlas = Atlas.open(atlas)
    rows = []
    for path in sorted(folder(atlas).glob("class_*.parquet")):
        meta = _checked_meta(atlas, path.stem)
        rows.append({"class_index": int(path.stem.split("_", 1)[1]), "class_name": meta.get("class_name", ""),
                     "description": meta.get("description", ""), "samples": meta.get("samples", ""),
                     "n_samples": meta.get("n_samples", 0)})
    return pd.DataFrame(rows, columns=["class_index", "class_name", "description", "samples", "n_samples"])


def _match(stored: pd.DataFrame, cls) -> int | None:
    text = str(cls).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    key = text.lower()
    for row in stored.itertuples():
        names = {row.class_name.lower(), row.description.lower()} | \
            {s.strip().lower() for s in row.description.split(",")}
        if key in names:
            return int(row.class_index)
    return None


def load_relevance(atlas: Atlas | str | Path, cls: int | str) -> pd.DataFrame:
    """The stored per-unit relevance for one class (written by ``class_relevance``).

    Parameters
    ----------
    atlas : Atlas, str or Path
        The atlas, or its folder.
    cls : int or str
        The class index, or a stored class's name or synonym (case-insensitive).

    Returns
    -------
    pandas.DataFrame
        One row per unit: ``layer``, ``unit``, ``class_index``, ``class_name``, ``rel_mean`` (mean share of the
        class logit's relevance), ``rel_max``, ``rel_raw_mean``, ``n_samples`` and ``top_ids`` (the samples where
        the unit is most relevant).

    Raises
    ------
    RelevanceNotComputed
        If no relevance is stored for that class (the message lists the stored classes and the command).
    """
    atlas = Atlas.open(atlas)
    stored = stored_classes(atlas)
    index = _match(stored, cls)
    path = folder(atlas) / f"class_{index}.parquet"
    if index is None or not path.is_file():
        have = ", ".join(f"{r.class_index} ({r.class_name})" for r in stored.itertuples()) or "none"
        raise RelevanceNotComputed(
            f"atlas {atlas.path} has no relevance for class '{cls}' (stored: {have}); compute it "
            f"with: unitlens relevance {atlas.path} --class '{cls}'")
    return _read(atlas, path.stem)


def load_meta(atlas: Atlas | str | Path, stem: str) -> dict:
    """The meta of relevance result ``stem`` (``{}`` if it has none), refused if it belongs to another atlas."""
    return _checked_meta(Atlas.open(atlas), stem)


def relevant_classes(atlas, layer: str, units=None, top: int = 5) -> pd.DataFrame:
    """Per unit of ``layer`` (or of ``units``), the ``top`` classes it is most relevant for (mean share over the
    samples predicted as the class), from the predicted-class run: layer, unit, class_index, class_name, rel_mean."""
    atlas = Atlas.open(atlas)
    path = folder(atlas) / "predicted.parquet"
    if not path.is_file():
        raise RelevanceNotComputed(
            f"atlas {atlas.path} has no predicted-class relevance; compute it with: "
            f"unitlens relevance {atlas.path} --predicted")
    frame = _read(atlas, "predicted")
    frame = frame[frame["layer"] == layer]
    if frame.empty:
        have = load_meta(atlas, "predicted").get("layers", [])
        raise RelevanceNotComputed(
            f"the predicted-class relevance of atlas {atlas.path} has no layer '{layer}' (it has "
            f"{len(have)} layers); run unitlens relevance {atlas.path} --predicted --layers "
            f"'{layer}'")
    if units is not None:
        frame = frame[frame["unit"].isin([int(u) for u in units])]
    frame = frame[frame["rank"] < top].sort_values(["unit", "rank"])
    return frame[["layer", "unit", "class_index", "class_name", "rel_mean"]].reset_index(drop=True)
