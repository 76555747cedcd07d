"""``LabelStore``: the one table of unit labels of an atlas, written by every labelling method and read by every
step that shows or groups units by label (the explorer, the attribution graph, the basis comparison).

``labels.parquet`` at the atlas root holds one row per (label set, layer, unit)::

    layer, unit, label, formula, score    the unit's label ("none": no label), its formula over probe concepts
                                          (JSON, "" where the method gives none) and the method's own score of it
    score_name                            what the score is ("a", "soft_wpmi", "auc", "" for none)
    method, backend, probe                the label set: the method, the embedding backend it used ("" for none),
                                          the probe set it labelled from ("" for none)
    concepts, options, created            where its concepts came from, its options (JSON), when it was written
    runner_up, runner_up_score, parent    SemanticLens only: the second-best concept and its a; the concept's parent

Writing a label set replaces its rows of the layers written and keeps its other layers and every other set. The
file is written atomically and stamped with the atlas's identity (a table of another atlas is refused); ``record
--force`` clears it, and removing a derived layer removes its rows (``unitlens.atlas.layout.DERIVED``).

Atlases written before this store kept SemanticLens labels in ``lens/<backend>/labels.parquet`` and probe labels in
``probe/<name>/labels/<method>.parquet``; those are read too (as their sets, for the layers the store does not
hold), until the set is labelled again.
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from unitlens.atlas.files import parquet_stamp, read_json, read_parquet, write_parquet
from unitlens.errors import UnitlensError

if TYPE_CHECKING:
    from unitlens.atlas.atlas import Atlas

NO_LABEL = "none"
KEY = ("method", "backend", "probe")
COLUMNS = ("layer", "unit", "label", "formula", "score", "score_name", "method", "backend", "probe", "concepts",
           "options", "created")
EXTRA = ("runner_up", "runner_up_score", "parent")
PREFERENCE = ("semanticlens", "invert", "clip-dissect")  # the set shown or used when none is named
CHANCE = "random"  # the chance baseline: never picked unless named


def set_name(method: str, backend: str = "", probe: str = "") -> str:
    """How a label set is named in messages and tables: ``invert (probe set default)``."""
    where = [w for w in (backend, f"probe set {probe}" if probe else "") if w]
    return f"{method} ({', '.join(where)})" if where else method


def label_counts(frame: pd.DataFrame, column: str = "label", layers: list[str] | None = None) -> pd.DataFrame:
    """Units per (layer, ``column`` value): layers in ``layers`` order (default: as they come), most frequent value
    first (network-dissection counts)."""
    counts = frame.groupby(["layer", column], sort=False).size().rename("units").reset_index()
    order = layers if layers is not None else list(dict.fromkeys(frame["layer"]))
    counts["_order"] = counts["layer"].map({n: i for i, n in enumerate(order)})
    counts = counts.sort_values(["_order", "units", column], ascending=[True, False, True], kind="stable")
    return counts.drop(columns="_order").reset_index(drop=True)


class LabelStore:
    """Read and write the labels of ``atlas`` (see the module docstring).

    Parameters
    ----------
    atlas : Atlas, str or Path
        The atlas, or its folder; the table is ``labels.parquet`` at its root.
    """

    def __init__(self, atlas: Atlas | str | Path):
        from unitlens.atlas.atlas import Atlas

        self.atlas = Atlas.open(atlas)
        self.path = self.atlas.derived_path("labels")

    # ------------------------------------------------------------------ reading
    def _stored(self) -> pd.DataFrame:
        """The rows of ``labels.parquet`` (identity checked), without those of layers the atlas no longer has."""
        if not self.path.is_file():
            return pd.DataFrame(columns=list(COLUMNS))
        fix = self.atlas.redo(self.path)
        self.atlas.check_identity(parquet_stamp(self.path, fix=fix), str(self.path), fix)
        frame = read_parquet(self.path, fix=fix)
        return frame[frame["layer"].isin(self._layers())].reset_index(drop=True)

    def _layers(self) -> list[str]:
        return [info.name for info in self.atlas.layers]

    def read(self, method: str | None = None, backend: str | None = None, probe: str | None = None,
             layers: list[str] | None = None) -> pd.DataFrame:
        """Every stored label, or those of one method / backend / probe set / the ``layers`` given.

        Labels kept by older atlases in per-step files are included for the layers this table does not hold.

        Parameters
        ----------
        method : str, optional
            Keep this labelling method's rows only (``semanticlens``, ``invert``, ``clip_dissect``, ...).
        backend : str, optional
            Keep the rows made with this embedding backend only (``""``: none).
        probe : str, optional
            Keep the rows labelled from this probe set only (``""``: none).
        layers : list of str, optional
            Keep the rows of these layers only.

        Returns
        -------
        pandas.DataFrame
            One row per (label set, layer, unit), columns as in the module docstring; empty (with those
            columns) for an atlas without labels.
        """
        frame = self._stored()
        old = self._legacy()
        if len(old):
            have = set(map(tuple, frame[[*KEY, "layer"]].to_numpy().tolist())) if len(frame) else set()
            keep = [tuple(r) not in have for r in old[[*KEY, "layer"]].to_numpy().tolist()]
            frame = pd.concat([frame, old[keep]], ignore_index=True) if len(frame) else old[keep]
        for column, value in (("method", method), ("backend", backend), ("probe", probe)):
            if value is not None:
                frame = frame[frame[column] == value]
        if layers is not None:
            frame = frame[frame["layer"].isin(list(layers))]
        return frame.reset_index(drop=True)

    def sets(self) -> pd.DataFrame:
        """The stored label sets.

        Returns
        -------
        pandas.DataFrame
            One row per label set: ``method``, ``backend``, ``probe``, ``name``, ``concepts``, ``score_name``,
            ``layers`` (in atlas order), ``units``, ``labelled`` (units with a label other than "none") and
            ``created`` (the latest write).
        """
        frame = self.read()
        order = {n: i for i, n in enumerate(self._layers())}
        rows = []
        for key, g in frame.groupby(list(KEY), sort=False):
            rows.append({**dict(zip(KEY, key)), "name": set_name(*key), "concepts": str(g["concepts"].iloc[0]),
                         "score_name": str(g["score_name"].iloc[0]),
                         "layers": sorted(set(g["layer"]), key=order.__getitem__), "units": len(g),
                         "labelled": int((g["label"] != NO_LABEL).sum()), "created": str(g["created"].max())})
        return pd.DataFrame(rows, columns=[*KEY, "name", "concepts", "score_name", "layers", "units", "labelled",
                                           "created"])

    def pick(self, layers: list[str] | None = None, method: str | None = None, backend: str | None = None,
             probe: str | None = None) -> pd.DataFrame | None:
        """The labels of one set, for steps that group units by one label each.

        Among the sets that match ``method`` / ``backend`` / ``probe`` (the chance baseline only when named), the
        one that covers most of ``layers`` wins, then by method (SemanticLens, INVERT, CLIP-Dissect), then one
        without a probe set.

        Parameters
        ----------
        layers : list of str, optional
            The layers wanted; None: all layers.
        method, backend, probe : str, optional
            Consider only the sets with this method, backend or probe set.

        Returns
        -------
        pandas.DataFrame or None
            The chosen set's rows of ``layers`` (as :meth:`read`), or None when no set has any.
        """
        sets = self.sets()
        for column, value in (("method", method), ("backend", backend), ("probe", probe)):
            if value is not None:
                sets = sets[sets[column] == value]
        if method is None:
            sets = sets[sets["method"] != CHANCE]
        wanted = set(layers) if layers is not None else None
        best, rank = None, None
        for row in sets.itertuples(index=False):
            covered = len(wanted & set(row.layers)) if wanted is not None else len(row.layers)
            if not covered:
                continue
            this = (-covered, PREFERENCE.index(row.method) if row.method in PREFERENCE else len(PREFERENCE),
                    row.probe != "", row.backend, row.probe)
            if rank is None or this < rank:
                best, rank = row, this
        if best is None:
            return None
        return self.read(best.method, best.backend, best.probe, layers)

    def _legacy(self) -> pd.DataFrame:
        """Labels in the per-step files of older atlases, as rows of this store."""
        frames = []
        for path in sorted(self.atlas.derived_path("lens").glob("*/labels.parquet")):
            meta = self._legacy_meta(path.parent / "meta.json", "atlas")
            if meta is None:
                continue
            t = read_parquet(path, fix=self.atlas.redo(path))
            frame = pd.DataFrame({"layer": t["layer"], "unit": t["unit"], "label": t["label"], "formula": "",
                                  "score": t["a"], "score_name": "a", "method": "semanticlens",
                                  "backend": str(meta.get("backend", "")), "probe": "",
                                  "concepts": t["concepts"] if "concepts" in t else "",
                                  "options": json.dumps({"threshold": float(t["threshold"].iloc[0])})
                                  if "threshold" in t and len(t) else "{}", "created": ""})
            for old, new in (("runner_up", "runner_up"), ("a_runner_up", "runner_up_score"), ("parent", "parent")):
                if old in t:
                    frame[new] = t[old].to_numpy()
            frames.append(frame)
        for path in sorted(self.atlas.derived_path("probe").glob("*/labels/*.parquet")):
            if self._legacy_meta(path.parent.parent / "meta.json", "identity") is None:
                continue
            t = read_parquet(path, fix=self.atlas.redo(path))
            frames.append(t[["layer", "unit", "label", "formula", "score"]].assign(
                score_name="", method=path.stem, backend="", probe=path.parent.parent.name, concepts="",
                options="{}", created=""))
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        frame = pd.concat(frames, ignore_index=True)
        return frame[frame["layer"].isin(self._layers())].reset_index(drop=True)

    def _legacy_meta(self, path: Path, key: str) -> dict | None:
        """The metadata of an older store, or None (with a warning) when it is unreadable or of another atlas."""
        try:
            meta = read_json(path, fix=self.atlas.redo(path))
            self.atlas.check_identity(meta.get(key) if isinstance(meta.get(key), dict) else None, str(path),
                                      self.atlas.redo(path))
        except UnitlensError as err:
            warnings.warn(f"the labels beside {path} are left out: {err}", stacklevel=3)
            return None
        return meta

    # ------------------------------------------------------------------ writing
    def write(self, frame: pd.DataFrame, method: str, *, backend: str = "", probe: str = "", concepts: str = "",
              score_name: str = "", options: dict[str, Any] | None = None) -> Path:
        """Store ``frame`` as label set (``method``, ``backend``, ``probe``).

        The set's earlier rows of these layers are replaced, everything else is kept. Takes the atlas's write
        lock; the file is replaced atomically and stamped with the atlas's identity.

        Parameters
        ----------
        frame : pandas.DataFrame
            Columns ``layer``, ``unit``, ``label``, ``score``; optionally ``formula`` and the columns of ``EXTRA``
            (``runner_up``, ``runner_up_score``, ``parent``).
        method : str
            The labelling method.
        backend : str
            The embedding backend it used (``""``: none).
        probe : str
            The probe set it labelled from (``""``: none).
        concepts : str
            Where its concepts came from.
        score_name : str
            What ``score`` is (``a``, ``soft_wpmi``, ``auc``; ``""``: none).
        options : dict, optional
            The method's options, stored as JSON.

        Returns
        -------
        Path
            The labels file.

        Raises
        ------
        ValueError
            If ``frame`` lacks a required column.
        """
        missing = sorted({"layer", "unit", "label", "score"} - set(frame.columns))
        if missing:
            raise ValueError(f"labels need columns {', '.join(missing)}")
        rows = frame.assign(
            formula=frame["formula"] if "formula" in frame else "", score_name=score_name, method=method,
            backend=backend, probe=probe, concepts=str(concepts),
            options=json.dumps(options or {}, sort_keys=True, default=str),
            created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        rows = rows[[*COLUMNS, *(c for c in EXTRA if c in rows)]]
        with self.atlas.writing("labels"):
            old = self._stored()
            same = (old["method"] == method) & (old["backend"] == backend) & (old["probe"] == probe) & \
                old["layer"].isin(set(rows["layer"]))
            merged = pd.concat([old[~same], rows], ignore_index=True) if len(old) else rows.reset_index(drop=True)
            write_parquet(self.path, merged, stamp=self.atlas.identity())
        return self.path

    def drop(self, method: str | None = None, backend: str | None = None, probe: str | None = None) -> int:
        """Remove the label sets that match, for a step whose inputs changed.

        For example a probe set recorded again, or lens vectors of other weights. None matches any value.

        Parameters
        ----------
        method, backend, probe : str, optional
            Remove only the sets with this method, backend or probe set.

        Returns
        -------
        int
            The number of rows removed.
        """
        if not self.path.is_file():
            return 0
        with self.atlas.writing("labels"):
            old = self._stored()
            hit = pd.Series(True, index=old.index)
            for column, value in (("method", method), ("backend", backend), ("probe", probe)):
                if value is not None:
                    hit &= old[column] == value
            if hit.any():
                write_parquet(self.path, old[~hit].reset_index(drop=True), stamp=self.atlas.identity())
        return int(hit.sum())
