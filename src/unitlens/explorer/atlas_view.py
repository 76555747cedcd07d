"""``AtlasView``: what the explorer shows of one atlas, as JSON-ready dicts, read through the public APIs of the
steps that computed it (``Atlas``, ``unitlens.mis.load_scores``/``summarize``, ``LensStore``, stored labels, the
relevance and audit stores). Nothing here computes MIS or lens results: a unit's 2-AFC task values Δ are
``unitlens.mis.score`` on the cached embeddings of that one unit's task images, read without writing.

Payloads (keys the front end reads):

- ``overview()``: provenance, counts, notes (what to run for what is missing), figures, one row per layer;
- ``layer(name)``: one column per field over every unit of the layer (for sorting, filtering and paging);
- ``unit(layer, i)``: exemplars, statistics, MIS and its tasks, lens label, concept examples, similar units,
  relevance and audit verdicts.

Tables are read once and kept; per-layer arrays are kept for the last few layers used.
"""
from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from unitlens.atlas import Atlas
from unitlens.atlas.labels import NO_LABEL, LabelStore, set_name
from unitlens.atlas.layout import DERIVED
from unitlens.errors import NotComputed, NotFound, UnitlensError
from unitlens.explorer.defaults import N_CONCEPT_EXAMPLES, N_EXEMPLARS, N_SIMILAR
from unitlens.explorer.maps import ThetaMaps
from unitlens.explorer.neighbours import nearest_units
from unitlens.explorer.paths import figure_files
from unitlens.explorer.thumbnails import Thumbnails
from unitlens.featviz.defaults import METRIC as FEATVIZ_MIS
from unitlens.featviz.store import FeatvizStore

CACHED_LAYERS = 8
NOT_FIGURES = ("explorer", "embeddings", "lens", "scores", "labels", "featviz")  # derived results that hold no figures


def num(value, digits: int = 5):
    """A float for JSON: None for missing/non-finite values, else ``digits`` significant digits."""
    if value is None:
        return None
    value = float(value)
    return float(f"{value:.{digits}g}") if math.isfinite(value) else None


def nums(values, digits: int = 5) -> list:
    return [num(v, digits) for v in np.asarray(values, dtype=float).tolist()]


class LayerCache(OrderedDict):
    """The last ``CACHED_LAYERS`` results of a per-layer loader."""

    def __init__(self, load):
        super().__init__()
        self.load = load
        self.lock = threading.Lock()

    def get_layer(self, key):
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        value = self.load(key)
        with self.lock:
            self[key] = value
            while len(self) > CACHED_LAYERS:
                self.popitem(last=False)
        return value


class AtlasView:
    """One atlas as the explorer shows it; ``name`` is its name in URLs, ``peers`` the other atlases served."""

    def __init__(self, path: str | Path, name: str, study: str | None = None):
        self.atlas = Atlas(path)
        self.name = name
        self.study = study
        self.peers: list[AtlasView] = []
        self.thumbnails = Thumbnails(self.atlas)
        self._exemplars = LayerCache(self.atlas.exemplars)
        self._unit_rows = LayerCache(self._load_unit_rows)
        self._stats = LayerCache(self._unit_stats)
        self._columns = LayerCache(self._load_columns)
        self._vectors = LayerCache(self._load_vectors)
        self._labels = LayerCache(self._layer_labels)
        self._featviz = LayerCache(self._load_featviz)
        self._overview: dict | None = None
        self.damaged_lens: dict[str, str] = {}  # lens layer -> why its file cannot be read (met so far)
        self._overview_lock = threading.Lock()

    # ------------------------------------------------------------------ tables, read once
    @property
    def path(self) -> Path:
        return self.atlas.path

    @cached_property
    def infos(self) -> dict:
        return {info.name: info for info in self.atlas.layers}

    @cached_property
    def units(self) -> pd.DataFrame:
        return self.atlas.units()

    @cached_property
    def scores(self) -> pd.DataFrame:
        """Every stored score, one row per (layer, unit), one column per metric@backend."""
        wide = self.atlas.scores(wide=True)
        return wide.set_index(["layer", "unit"]).sort_index() if len(wide) else wide

    @cached_property
    def mis_backend(self) -> str | None:
        from unitlens.mis.defaults import BACKEND

        scores = self.atlas.scores()
        have = sorted(scores.loc[scores["metric"] == "mis", "backend"].unique())
        if not have:
            return None
        return BACKEND if BACKEND in have else have[0]

    @cached_property
    def mis_frame(self) -> pd.DataFrame | None:
        from unitlens.mis import load_scores

        return load_scores(self.atlas, self.mis_backend) if self.mis_backend else None

    @cached_property
    def mis_params(self) -> dict:
        """Per layer, the MIS parameters its scores were computed with (n_tasks, k, tau)."""
        scores = self.atlas.scores()
        rows = scores[(scores["metric"] == "mis") & (scores["backend"] == self.mis_backend)]
        rows = rows.drop_duplicates("layer")
        return {layer: json.loads(p) for layer, p in zip(rows["layer"], rows["params"])}

    @cached_property
    def lens(self):
        """The lens store shown (the lens default backend when present, else the first), or None."""
        from unitlens.lens.defaults import DEFAULT_LENS_BACKEND
        from unitlens.lens.store import LensStore

        have = LensStore.backends(self.atlas)
        if not have:
            return None
        return LensStore(self.atlas, DEFAULT_LENS_BACKEND if DEFAULT_LENS_BACKEND in have else have[0])

    @cached_property
    def lens_layers(self) -> list[str]:
        return self.lens.layers if self.lens is not None else []

    @cached_property
    def maps(self) -> ThetaMaps | None:
        return ThetaMaps(self.lens) if self.lens is not None else None

    @cached_property
    def label_store(self) -> LabelStore:
        return LabelStore(self.atlas)

    @cached_property
    def label_sets(self) -> pd.DataFrame:
        """One row per stored label set (method, backend, probe, name, layers, labelled, ...)."""
        return self.label_store.sets()

    @cached_property
    def labels(self) -> pd.DataFrame | None:
        """The label set the layer columns and unit cards show, indexed by (layer, unit): SemanticLens labels of the
        lens backend where there are some, else the stored set that covers most layers (every set is listed on the
        unit pages)."""
        table = self.label_store.pick(method="semanticlens", backend=self.lens.backend) if self.lens else None
        if table is None:
            table = self.label_store.pick()
        return table.set_index(["layer", "unit"]).sort_index() if table is not None else None

    @cached_property
    def label_set(self) -> dict | None:
        """The shown set: method, backend, probe, name, score_name, options."""
        if self.labels is None:
            return None
        first = self.labels.iloc[0]
        key = {k: str(first[k]) for k in ("method", "backend", "probe")}
        return {**key, "name": set_name(**key), "score_name": str(first["score_name"]),
                "concepts": str(first["concepts"]), "options": json.loads(first["options"] or "{}")}

    @cached_property
    def redundancy(self) -> dict:
        path = self.lens.path / "measures.parquet" if self.lens is not None else None
        if path is None or not path.is_file():
            return {}
        table = pd.read_parquet(path)
        return dict(zip(table["layer"], table["redundancy"]))

    @cached_property
    def relevance_classes(self) -> pd.DataFrame:
        from unitlens.relevance import stored_classes

        return stored_classes(self.atlas)

    @cached_property
    def relevance(self) -> dict[int, pd.DataFrame]:
        """Stored class relevance by class index, indexed by (layer, unit), with each unit's rank in its layer."""
        from unitlens.relevance import load_relevance

        out = {}
        for index in self.relevance_classes["class_index"].tolist():
            frame = load_relevance(self.atlas, int(index))
            frame = frame.assign(rank=frame.groupby("layer")["rel_mean"].rank(ascending=False, method="min"))
            out[int(index)] = frame.set_index(["layer", "unit"]).sort_index()
        return out

    @cached_property
    def audit_classes(self) -> pd.DataFrame:
        from unitlens.audit import audited_classes

        return audited_classes(self.atlas)

    @cached_property
    def audits(self) -> dict[int, pd.DataFrame]:
        from unitlens.audit import stored_audit

        return {int(i): stored_audit(self.atlas, int(i)).set_index(["layer", "unit"]).sort_index()
                for i in self.audit_classes["class_index"].tolist()}

    @cached_property
    def embeddings(self):
        from unitlens.backends.cache import StoredEmbeddings

        return StoredEmbeddings(self.atlas, self.mis_backend) if self.mis_backend else None

    @cached_property
    def featviz_store(self) -> FeatvizStore:
        return FeatvizStore(self.atlas)

    @cached_property
    def featviz_layers(self) -> list[str]:
        """The layers that have feature visualisations (none when they cannot be read)."""
        try:
            return self.featviz_store.layers()
        except UnitlensError:
            return []

    def _load_featviz(self, layer: str) -> tuple[dict, pd.DataFrame]:
        """A layer's feature visualisation options and table, indexed by (unit, direction, index)."""
        meta = self.featviz_store.meta(layer)
        table = self.featviz_store.table(layer)
        return meta, table.set_index(["unit", "direction", "index"]).sort_index()

    def featviz_files(self, layer: str) -> dict[str, Path]:
        """The image files of a layer's feature visualisations by their name in its table; only those inside the
        atlas's registered ``featviz`` folder (links resolved), for the server."""
        from unitlens.explorer.paths import inside

        if layer not in self.featviz_layers:
            return {}
        root = self.atlas.derived_path("featviz")
        _, table = self._featviz.get_layer(layer)
        paths = {f: self.featviz_store.path(layer, f) for f in table["file"]}
        return {f: p for f, p in paths.items() if inside(root, p)}

    def _featviz_of(self, layer: str, unit: int) -> dict | None:
        """A unit's feature visualisations (files and activations reached, both directions), the natural extremes
        and both MIS values, or None when its layer has none."""
        if layer not in self.featviz_layers:
            return None
        meta, table = self._featviz.get_layer(layer)
        try:
            rows = table.loc[unit]
        except KeyError:
            return None
        cols = self.columns(layer)
        out = {"folder": self.featviz_store.folder(layer).name, "natural_top": num(rows["natural_top"].iloc[0]),
               "natural_bottom": num(rows["natural_bottom"].iloc[0]), "backend": self.mis_backend,
               "mis": num(cols[FEATVIZ_MIS][unit]) if FEATVIZ_MIS in cols else None,
               "mis_exemplars": num(cols["mis"][unit]) if "mis" in cols else None,
               **{k: meta.get("options", {}).get(k) for k in ("steps", "size", "per_side", "seed")}}
        for direction in ("top", "bottom"):
            part = rows.loc[direction] if direction in rows.index.get_level_values(0) else rows.iloc[:0]
            out[direction] = [{"file": f, "activation": num(a)} for f, a in zip(part["file"], part["activation"])]
        return out

    def figures(self) -> dict[str, Path]:
        """The figures stored in the atlas's result folders (listed anew each time: plots may be added)."""
        folders = [self.atlas.derived_path(d.name) for d in DERIVED.values() if d.name not in NOT_FIGURES]
        return figure_files(self.path, folders)

    # ------------------------------------------------------------------ lookups
    def info(self, layer: str):
        if layer not in self.infos:
            raise NotFound(f"layer '{layer}' is not in atlas {self.name} ({self.path})")
        return self.infos[layer]

    def n_units(self, layer: str) -> int:
        return int(self._exemplars.get_layer(self.info(layer).name).top_ids.shape[0])

    def check_unit(self, layer: str, unit: int) -> int:
        n = self.n_units(layer)
        if not 0 <= int(unit) < n:
            raise NotFound(f"unit {unit} is not in layer {layer} of atlas {self.name}: it has units 0..{n - 1}")
        return int(unit)

    def _score_column(self, layer: str, column: str, n: int) -> np.ndarray | None:
        """One stored score over the units of a layer (NaN where missing); None when the layer has none."""
        if column not in getattr(self.scores, "columns", ()) or not len(self.scores):
            return None
        try:
            part = self.scores.loc[layer, column]
        except KeyError:
            return None
        if not part.notna().any():
            return None
        out = np.full(n, np.nan)
        out[part.index.to_numpy(dtype=int)] = part.to_numpy(dtype=float)
        return out

    def columns(self, layer: str) -> dict[str, np.ndarray]:
        """Every per-unit value of a layer the views show, as arrays over its units (kept for recent layers)."""
        return self._columns.get_layer(self.info(layer).name)

    def _load_columns(self, layer: str) -> dict[str, np.ndarray]:
        ex = self._exemplars.get_layer(layer)
        n = int(ex.top_ids.shape[0])
        rows = self._unit_rows.get_layer(layer)
        out = {"top_id": ex.top_ids[:, 0].numpy(), "top_val": ex.top_vals[:, 0].double().numpy(),
               "constant": rows["constant"].to_numpy(dtype=bool)}
        metrics = []
        if self.mis_backend is not None:
            metrics += [("mis", self.mis_backend), ("mis_accuracy", self.mis_backend),
                        (FEATVIZ_MIS, self.mis_backend)]
        if layer in self.lens_layers:
            metrics += [(m, self.lens.backend) for m in ("clarity", "polysemanticity", "max_similarity")]
        for metric, backend in metrics:
            values = self._score_column(layer, f"{metric}@{backend}", n)
            if values is not None:
                out[metric] = values
        if self.labels is not None:
            try:
                part = self.labels.loc[layer]
            except KeyError:
                part = None
            if part is not None:
                where = part.index.to_numpy(dtype=int)
                for column, key, kind in (("label", "label", object), ("score", "label_score", float),
                                          ("runner_up", "runner_up", object),
                                          ("runner_up_score", "runner_up_score", float)):
                    if column in part and part[column].notna().any():
                        values = np.full(n, None if kind is object else np.nan, dtype=kind)
                        values[where] = part[column].to_numpy(dtype=kind)
                        out[key] = values
        return out

    def _layer_labels(self, layer: str) -> pd.DataFrame:
        """Every stored label of a layer (all sets), indexed by unit."""
        table = self.label_store.read(layers=[layer])
        return table.assign(name=[set_name(*k) for k in zip(table["method"], table["backend"], table["probe"])]
                            ).set_index("unit").sort_index()

    def _load_unit_rows(self, layer: str) -> pd.DataFrame:
        return self.units[self.units["layer"] == layer].set_index("unit").sort_index()

    def _unit_stats(self, layer: str) -> dict[int, dict]:
        return self._unit_rows.get_layer(layer).to_dict("index")

    # ------------------------------------------------------------------ notes
    def notes(self) -> list[str]:
        p = self.path
        if not self.atlas.complete:
            return [f"the record run of this atlas has not finished (status {self.atlas.manifest.status}): "
                    "run the same unitlens record command again to resume it"]
        out = []
        if self.mis_backend is None:
            out.append(f"no MIS scores yet: run unitlens mis {p}")
        if self.lens is None:
            out.append(f"no SemanticLens vectors yet (labels, concept examples, maps, search): run unitlens lens "
                       f"embed {p} --layers LAYERS")
        else:
            if not len(self.label_sets):
                out.append(f"units have no labels yet: run unitlens lens label {p} --concepts FILE")
            if not any(c.startswith("clarity@") for c in getattr(self.scores, "columns", ())):
                out.append(f"no clarity / polysemanticity yet: run unitlens lens measures {p}")
        return out

    # ------------------------------------------------------------------ overview
    def overview(self) -> dict:
        """The overview payload (made once: the server shows the results as they were when it started)."""
        with self._overview_lock:
            if self._overview is None:
                self._overview = self._make_overview()
        return {**self._overview, "figures": sorted(self.figures())}

    def _make_overview(self) -> dict:
        m = self.atlas.manifest
        cfg = m.config
        payload = {
            "name": self.name, "path": str(self.path), "study": self.study, "status": m.status,
            "model": cfg.model, "weights": cfg.weights, "weights_hash": cfg.weights_hash,
            "data": cfg.dataset, "n_samples": cfg.n_samples, "fingerprint": cfg.dataset_fingerprint,
            "k": cfg.k, "spatial": cfg.spatial, "tokens": cfg.tokens,
            "versions": dict(m.versions), "seconds": num(m.seconds), "n_images": m.n_images,
            "n_skipped": m.n_skipped, "notes": self.notes(), "figures": sorted(self.figures()),
        }
        if not self.atlas.complete:
            return {**payload, "counts": {"layers": len(m.layers)}, "layers": [], "mis": None,
                    "lens": None, "relevance": [], "audits": []}
        summary = self.atlas.summary().set_index("layer")
        mis_layers = None
        counts = {"layers": len(summary), "units": int(summary["units"].sum()),
                  "constant": int(summary["constant"].sum()), "nonfinite": int(summary["nonfinite"].sum()),
                  "scored": 0, "embedded": 0, "labelled": 0}
        mis = None
        if self.mis_frame is not None:
            from unitlens.mis import summarize

            tables = summarize(self.mis_frame)
            mis_layers = tables["layer"].set_index("layer")
            whole = tables["model"].iloc[0]
            counts["scored"] = int(whole["scored"])
            mis = {"backend": self.mis_backend, "mean": num(whole["mis_mean"]), "p5": num(whole["mis_p5"]),
                   "p95": num(whole["mis_p95"]), "accuracy": num(whole["accuracy_mean"]),
                   "tau": num(self.mis_frame["tau"].dropna().iloc[0]) if self.mis_frame["tau"].notna().any()
                   else None}
        lens = None
        label_counts = {}
        if self.lens is not None:
            counts["embedded"] = int(sum(int(self.lens.layer_meta(n).get("units", 0)) for n in self.lens_layers))
            lens = {"backend": self.lens.backend, "layers": self.lens_layers,
                    "crop": sorted({str(self.lens.layer_meta(n).get("crop")) for n in self.lens_layers})}
        shown = self.label_set
        if self.labels is not None and shown is not None:
            table = self.labels.reset_index()
            counts["labelled"] = int((table["label"] != NO_LABEL).sum())
            used = [*table["label"], *table.get("runner_up", pd.Series(dtype=object)).dropna()]
            if lens is not None and shown["method"] == "semanticlens":
                lens["concepts"] = shown["concepts"]
                lens["concepts_list"] = sorted({str(c) for c in used if c != NO_LABEL})
            for layer, g in table[table["label"] != NO_LABEL].groupby("layer"):
                top = g["label"].value_counts().head(3)
                label_counts[layer] = ", ".join(f"{k} ({v})" for k, v in top.items())
        rows = []
        for layer, info in self.infos.items():
            s = summary.loc[layer] if layer in summary.index else None
            row = {"layer": layer, "type": info.type, "depth": info.depth, "width": info.width,
                   "units": int(s["units"]) if s is not None else info.width,
                   "constant": int(s["constant"]) if s is not None else None,
                   "embedded": layer in self.lens_layers, "labels": label_counts.get(layer, "")}
            if mis_layers is not None and layer in mis_layers.index:
                r = mis_layers.loc[layer]
                row.update(mis_mean=num(r["mis_mean"]), mis_p5=num(r["mis_p5"]), mis_p95=num(r["mis_p95"]),
                           accuracy=num(r["accuracy_mean"]), scored=int(r["scored"]))
            if layer in self.lens_layers:
                cols = self.columns(layer)
                for metric in ("clarity", "polysemanticity"):
                    if metric in cols:
                        row[metric] = num(np.nanmean(cols[metric]))
                row["redundancy"] = num(self.redundancy.get(layer))
            rows.append(row)
        relevance = self.relevance_classes[["class_index", "class_name", "n_samples"]].to_dict("records")
        audits = self.audit_classes[["class_index", "class_name"]].to_dict("records")
        for a in audits:
            frame = self.audits[int(a["class_index"])]
            a["verdicts"] = {str(k): int(v) for k, v in frame["verdict"].value_counts().items()}
        sets = [{"name": r.name, "method": r.method, "backend": r.backend, "probe": r.probe, "concepts": r.concepts,
                 "layers": list(r.layers), "labelled": int(r.labelled), "units": int(r.units)}
                for r in self.label_sets.itertuples(index=False)]
        return {**payload, "counts": counts, "mis": mis, "lens": lens, "layers": rows, "relevance": relevance,
                "audits": audits, "label_sets": sets, "label_set": self.label_set["name"] if self.label_set else None}

    # ------------------------------------------------------------------ layer
    def layer(self, layer: str) -> dict:
        self.atlas.require_complete()
        info = self.info(layer)
        n = self.n_units(layer)
        rows = self._unit_rows.get_layer(layer)
        cols = self.columns(layer)
        columns = {"unit": list(range(n)), "top_id": cols["top_id"].tolist(), "top_val": nums(cols["top_val"]),
                   "constant": cols["constant"].tolist()}
        available = ["unit", "top_val"]
        notes = []
        for metric in ("mis", "mis_accuracy", FEATVIZ_MIS, "clarity", "polysemanticity", "label_score"):
            if metric in cols:
                columns[metric] = nums(cols[metric], 4)
                available.append(metric)
        featviz = layer in self.featviz_layers
        if featviz:  # each unit's first image that drives it up, for thumbnails
            _, table = self._featviz.get_layer(layer)
            first = table.xs(("top", 0), level=("direction", "index"))["file"]
            columns["featviz_top"] = [first.get(u) for u in range(n)]
        if "label" in cols:
            columns["label"] = cols["label"].tolist()
        if "mis" not in cols:
            notes.append(f"no MIS scores for this layer: run unitlens mis {self.path} --layers {layer}")
        embedded = layer in self.lens_layers
        if not embedded and self.lens is not None:
            notes.append(f"this layer has no lens vectors (labels, concept examples, map): run unitlens lens embed "
                         f"{self.path} --layers {layer}")
        relevance = []
        for index, frame in self.relevance.items():
            try:
                part = frame.loc[layer]
            except KeyError:
                continue
            values = np.full(n, np.nan)
            values[part.index.to_numpy(dtype=int)] = part["rel_mean"].to_numpy(dtype=float)
            key = f"rel_{index}"
            columns[key] = nums(values, 4)
            name = self.relevance_classes.set_index("class_index").loc[index, "class_name"]
            relevance.append({"key": key, "class_index": index, "class_name": name})
        verdicts = []
        for index, frame in self.audits.items():
            try:
                part = frame.loc[layer]
            except KeyError:
                continue
            values = np.full(n, None, dtype=object)
            values[part.index.to_numpy(dtype=int)] = part["verdict"].to_numpy()
            key = f"audit_{index}"
            columns[key] = values.tolist()
            name = self.audit_classes.set_index("class_index").loc[index, "class_name"]
            verdicts.append({"key": key, "class_index": index, "class_name": name})
        return {"atlas": self.name, "layer": layer, "type": info.type, "depth": info.depth, "width": info.width,
                "n_units": n, "n_constant": int(rows["constant"].sum()), "embedded": embedded,
                "mis_backend": self.mis_backend, "lens_backend": self.lens.backend if self.lens else None,
                "label_set": self.label_set["name"] if self.label_set else None,
                "label_score": self.label_set["score_name"] if self.label_set else None,
                "columns": columns, "sortable": available, "relevance": relevance, "audits": verdicts,
                "notes": notes, "featviz": {"folder": self.featviz_store.folder(layer).name} if featviz else None}

    def layer_map(self, layer: str) -> dict:
        self.info(layer)
        if layer not in self.lens_layers:
            raise NotComputed(f"layer {layer} of atlas {self.name} has no lens vectors to map: run unitlens lens "
                              f"embed {self.path} --layers {layer}")
        maps = self.maps
        assert maps is not None  # the layer has lens vectors, so the lens store exists
        return maps.get(layer)

    # ------------------------------------------------------------------ unit
    def unit(self, layer: str, unit: int, n_tasks: int | None = None) -> dict:
        """Everything the unit page shows; ``n_tasks``: how many of its MIS tasks to include (None: all)."""
        self.atlas.require_complete()
        unit = self.check_unit(layer, unit)
        return self.units_of(layer, [unit], n_tasks)[0]

    def units_of(self, layer: str, units: list[int], n_tasks: int | None = None) -> list[dict]:
        """Unit pages of several units of one layer (their MIS tasks and similar units computed together)."""
        info = self.info(layer)
        ex = self._exemplars.get_layer(layer)
        rows = self._stats.get_layer(layer)
        tasks = self._mis_tasks(layer, units, n_tasks)
        similar = self._similar(layer, units)
        out = []
        for k, u in enumerate(units):
            r = rows[u]
            page = {
                "atlas": self.name, "layer": layer, "unit": u, "n_units": int(ex.top_ids.shape[0]),
                "type": info.type, "depth": info.depth,
                "stats": {"n": int(r["n"]), "min": num(r["min"]), "max": num(r["max"]), "mean": num(r["mean"]),
                          "std": num(r["std"]), "nonfinite": int(r["nonfinite"]), "constant": bool(r["constant"]),
                          **{key: int(r[key]) for key in ("top_tied", "bottom_tied") if key in r}},
                "k": int(ex.k),
                "top": {"ids": ex.top_ids[u, :N_EXEMPLARS].tolist(), "vals": nums(ex.top_vals[u, :N_EXEMPLARS])},
                "bottom": {"ids": ex.bottom_ids[u, :N_EXEMPLARS].tolist(),
                           "vals": nums(ex.bottom_vals[u, :N_EXEMPLARS])},
                "mis": tasks[k], "lens": self._lens_of(layer, u, similar[k]),
                "relevance": self._relevance_of(layer, u), "audits": self._audits_of(layer, u),
                "labels": self._labels_of(layer, u), "featviz": self._featviz_of(layer, u), "notes": [],
            }
            if page["mis"] is None:
                page["notes"].append(f"no MIS score for this layer: run unitlens mis {self.path} --layers {layer}")
            if page["lens"] is None:
                page["notes"].append(f"no lens vectors for this layer: run unitlens lens embed {self.path} "
                                     f"--layers {layer}")
            for other, why in self.damaged_lens.items():
                page["notes"].append(f"similar units leave out layer {other}: {why}")
            out.append(page)
        return out

    def _mis_tasks(self, layer: str, units: list[int], n_tasks: int | None) -> list[Any]:
        """Per unit: its MIS, accuracy and 2-AFC tasks (ids of explanations and queries, Δ⁺, Δ⁻ where the task
        images' embeddings are cached)."""
        if self.mis_backend is None or layer not in self.mis_params:
            return [None] * len(units)
        from unitlens.mis import Tasks, build_tasks, score

        params = self.mis_params[layer]
        N, K, tau = int(params["n_tasks"]), int(params["k"]), float(params["tau"])
        n = self.n_units(layer)
        cols = self.columns(layer)
        mis, acc = cols.get("mis", np.full(n, np.nan)), cols.get("mis_accuracy", np.full(n, np.nan))
        order = np.argsort(-np.nan_to_num(mis, nan=-np.inf), kind="stable")
        rank = np.empty(n, dtype=int)
        rank[order] = np.arange(1, n + 1)
        ex = self._exemplars.get_layer(layer)
        index = torch.tensor(units, dtype=torch.long)
        shown = N if n_tasks is None else min(N, n_tasks)
        tasks = build_tasks(ex.top_ids[index], ex.bottom_ids[index], N, K)
        if shown < N:  # only the tasks shown are scored (then the score is not recomputed from all of them)
            tasks = Tasks(tasks.pos_expl[:, :shown], tasks.neg_expl[:, :shown], tasks.pos_query[:, :shown],
                          tasks.neg_query[:, :shown])
        scored = [k for k, u in enumerate(units) if math.isfinite(mis[u])]
        deltas, note = None, None
        if scored and self.embeddings is not None:
            sub = tasks[torch.tensor(scored)]
            ids = sub.ids()
            try:
                table = self.embeddings.get(ids)
                res = score(table, sub, tau, table_ids=ids, device="cpu")
                deltas = {k: (res.delta_pos[j], res.delta_neg[j]) for j, k in enumerate(scored)}
            except NotComputed as err:
                note = f"Δ values unavailable: {err}"
        out = []
        for k, u in enumerate(units):
            entry = {"backend": self.mis_backend, "value": num(mis[u]), "accuracy": num(acc[u]),
                     "rank": int(rank[u]) if math.isfinite(mis[u]) else None, "n_scored": int(np.isfinite(mis).sum()),
                     "tau": tau, "n_tasks": N, "k_expl": K, "note": note, "tasks": []}
            for t in range(shown):
                task = {"pos_expl": tasks.pos_expl[k, t].tolist(), "neg_expl": tasks.neg_expl[k, t].tolist(),
                        "pos_query": int(tasks.pos_query[k, t]), "neg_query": int(tasks.neg_query[k, t])}
                if deltas is not None and k in deltas:
                    dp, dn = float(deltas[k][0][t]), float(deltas[k][1][t])
                    task.update(delta_pos=num(dp), delta_neg=num(dn), p=num(1 / (1 + math.exp(-(dp - dn) / tau))))
                entry["tasks"].append(task)
            if deltas is not None and k in deltas and shown == N:  # the stored score, from these tasks: they agree
                margin = deltas[k][0] - deltas[k][1]
                entry["recomputed"] = num(torch.sigmoid(margin / tau).mean())
            out.append(entry)
        return out

    def unit_vectors(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A lens layer's non-constant units and their normalised θ (kept for recent layers); none for a layer
        whose lens file cannot be read (``damaged_lens`` says why), so one damaged file leaves that layer out of
        the similar-unit lists of the other layers' pages instead of failing them."""
        return self._vectors.get_layer(layer)

    def _load_vectors(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            data = self.lens.read_layer(layer)
        except UnitlensError as err:
            self.damaged_lens[layer] = str(err)
            return torch.empty(0, dtype=torch.long), torch.empty(0, 0)
        keep = torch.nonzero(~data.constant).flatten()
        return keep, data.vectors[keep]

    def _similar(self, layer: str, units: list[int]) -> list[Any]:
        if layer not in self.lens_layers:
            return [None] * len(units)
        queries = F.normalize(self.lens.read_layer(layer).theta[torch.tensor(units, dtype=torch.long)], dim=-1)
        same = nearest_units(self.unit_vectors, queries, [layer], N_SIMILAR, exclude=(layer, units))
        others = [n for n in self.lens_layers if n != layer]
        other = nearest_units(self.unit_vectors, queries, others, N_SIMILAR) if others else [[] for _ in units]
        peers = []
        for peer in self.peers:
            store = peer.lens
            if store is None or store.backend != self.lens.backend or store.weights_id != self.lens.weights_id:
                continue
            peers.append((peer, nearest_units(peer.unit_vectors, queries, peer.lens_layers, N_SIMILAR)))
        out = []
        for k in range(len(units)):
            out.append({"layer": [self.card(*hit) for hit in same[k]],
                        "atlas": [self.card(*hit) for hit in other[k]],
                        "peers": [{"atlas": peer.name, "units": [peer.card(*hit) for hit in hits[k]]}
                                  for peer, hits in peers]})
        return out

    def card(self, layer: str, unit: int, cos: float | None = None) -> dict:
        """What a unit card shows: its top exemplar, label and MIS (and ``cos`` to a query unit)."""
        cols = self.columns(layer)
        card = {"atlas": self.name, "layer": layer, "unit": unit, "top_id": int(cols["top_id"][unit]),
                "label": cols["label"][unit] if "label" in cols else None,
                "mis": num(cols["mis"][unit], 4) if "mis" in cols else None}
        if cos is not None:
            card["cos"] = num(cos, 4)
        return card

    def _lens_of(self, layer: str, unit: int, similar: dict | None) -> dict | None:
        if layer not in self.lens_layers:
            return None
        data = self.lens.read_layer(layer)
        meta = self.lens.layer_meta(layer)
        examples = []
        for j in torch.nonzero(data.mask[unit]).flatten()[:N_CONCEPT_EXAMPLES].tolist():
            sample = int(data.ids[unit, j])
            box = [int(v) for v in data.boxes[unit, j].tolist()] if bool(data.has_box[unit, j]) else None
            size = self.thumbnails.size_of(sample) if box else None
            examples.append({"id": sample, "val": num(data.vals[unit, j]), "box": box if size else None,
                             "size": list(size) if size else None})
        out = {"backend": self.lens.backend, "crop": meta.get("crop"), "m": meta.get("m"),
               "constant": bool(data.constant[unit]), "examples": examples, "similar": similar}
        cols = self.columns(layer)
        for metric in ("clarity", "polysemanticity", "max_similarity"):
            out[metric] = num(cols[metric][unit]) if metric in cols else None
        shown = self.label_set
        if "label" in cols and shown is not None and shown["method"] == "semanticlens" \
                and shown["backend"] == self.lens.backend:
            label = cols["label"][unit]
            concepts = []
            if label is not None and label != NO_LABEL:
                concepts.append({"concept": str(label), "a": num(cols["label_score"][unit])})
            if "runner_up" in cols and isinstance(cols["runner_up"][unit], str):
                concepts.append({"concept": cols["runner_up"][unit], "a": num(cols["runner_up_score"][unit])})
            out.update(label=label, a=num(cols["label_score"][unit]), threshold=num(shown["options"].get("threshold")),
                       concepts=concepts)
        else:
            out.update(label=None, concepts=[])
        return out

    def _labels_of(self, layer: str, unit: int) -> list[dict]:
        """Its label from every stored label set."""
        table = self._labels.get_layer(layer)
        rows = table.loc[[unit]] if unit in table.index else table.iloc[0:0]
        return [{"set": r.name, "method": r.method, "backend": r.backend, "probe": r.probe, "concepts": r.concepts,
                 "label": str(r.label), "score": num(r.score), "score_name": r.score_name}
                for r in rows.itertuples(index=False)]

    def _relevance_of(self, layer: str, unit: int) -> dict:
        classes = []
        names = self.relevance_classes.set_index("class_index")["class_name"].to_dict()
        for index, frame in self.relevance.items():
            try:
                r = frame.loc[(layer, unit)]
            except KeyError:
                continue
            top = [int(i) for i in (r["top_ids"] if r["top_ids"] is not None else [])][:8]
            classes.append({"class_index": index, "class_name": names.get(index, ""), "rel_mean": num(r["rel_mean"]),
                            "rel_max": num(r["rel_max"]), "rank": int(r["rank"]),
                            "n_samples": int(r["n_samples"]), "top_ids": top})
        predicted = []
        if self.atlas.derived_path("relevance", "predicted.parquet").is_file():
            try:
                table = self._predicted.get_layer(layer)
            except UnitlensError:  # the predicted-class run did not cover this layer
                table = None
            if table is not None:
                part = table[table["unit"] == unit]
                predicted = [{"class_index": int(c), "class_name": str(n), "rel_mean": num(v)}
                             for c, n, v in zip(part["class_index"], part["class_name"], part["rel_mean"])]
        return {"classes": classes, "predicted": predicted}

    @cached_property
    def _predicted(self) -> LayerCache:
        from unitlens.relevance import relevant_classes

        return LayerCache(lambda layer: relevant_classes(self.atlas, layer))

    def _audits_of(self, layer: str, unit: int) -> list[dict]:
        out = []
        names = self.audit_classes.set_index("class_index")["class_name"].to_dict()
        for index, frame in self.audits.items():
            try:
                r = frame.loc[(layer, unit)]
            except KeyError:
                continue
            out.append({"class_index": index, "class_name": names.get(index, ""), "verdict": str(r["verdict"]),
                        "a_valid": num(r["a_valid"]), "valid_concept": str(r.get("valid_concept", "")),
                        "a_spur": num(r["a_spur"]), "spurious_concept": str(r.get("spurious_concept", "")),
                        "relevance": num(r["relevance"])})
        return out

