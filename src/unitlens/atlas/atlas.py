"""``Atlas(path)``: read access to everything a record run wrote, for every later step.

Layout::

    manifest.json                   model, weights hash, dataset fingerprint, config, versions, status, format
                                    version (``unitlens.atlas.manifest.Manifest``)
    units.parquet                   one row per unit: layer, unit, type, depth, widths, stats, constant
    samples.parquet                 one row per sample: id, path, label, metadata, skipped
    exemplars/<layer>.safetensors   top_ids/top_vals (descending), bottom_ids/bottom_vals (ascending), (C, k);
                                    ids are stored as int32 (2**31 samples at most) and read as int64
                                    (derived layers ``L::NAME`` under their safe file name)
    scores.parquet                  long table: layer, unit, metric, backend, value, params (JSON); stamped
                                    with the atlas's identity in its schema metadata
    embeddings/<backend>/           cached image/crop embeddings (see unitlens.backends.cache)
    pairwise/<backend>/<key>/       similarity matrices of pairwise backends in row blocks (unitlens.backends.pairwise)

A damaged or missing file raises ``CorruptFile`` naming it and the command that rebuilds it; derived results
stamped with another atlas's identity are refused (``check_identity``). ``unitlens.atlas.verify`` checks it all.

Derived layers (the features of a fitted basis, ``blocks.6.0.conv_pwl::sae``) are added by later steps with
``add_layers``: rows in ``units.parquet``, an exemplar file and an entry in ``manifest.layers`` like any
recorded layer, so every step reads them unchanged; ``manifest.derived_layers`` says where each came from.
They are not in ``manifest.config.layers`` (the record run's own configuration) nor in ``identity()``.
"""
from __future__ import annotations

import fnmatch
import hashlib
import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from unitlens.atlas.advice import redo_advice, rerecord, rerecord_layer
from unitlens.atlas.files import (
    parquet_stamp,
    read_parquet,
    read_tensors,
    write_parquet,
    write_tensors,
)
from unitlens.atlas.layer_results import remove_layer_results
from unitlens.atlas.layout import (
    DERIVED_SEPARATOR,
    MANIFEST,
    SAMPLES,
    UNITS,
    backend_dirname,
    derived_path,
    exemplar_path,
)
from unitlens.atlas.lock import writing
from unitlens.atlas.manifest import Manifest
from unitlens.errors import AtlasError, AtlasIncomplete, BadInput, CorruptFile, UnknownLayer
from unitlens.zoo.units import LayerInfo

if TYPE_CHECKING:  # torch is imported by the steps that read exemplars, not by table-only commands
    import torch

    from unitlens.atlas.unit import Unit


@dataclass
class Exemplars:
    """Per-unit most (descending) and least (ascending) activating samples of one layer, each (C, k)."""

    top_ids: torch.Tensor
    top_vals: torch.Tensor
    bottom_ids: torch.Tensor
    bottom_vals: torch.Tensor

    @property
    def k(self) -> int:
        return self.top_ids.shape[1]


class Atlas:
    """An on-disk atlas. ``units()``, ``samples()`` and ``exemplars(layer)`` are plain tables and tensors."""

    EXEMPLAR_KEYS = ("top_ids", "top_vals", "bottom_ids", "bottom_vals")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise AtlasError(f"{self.path} is not an atlas (no {MANIFEST}); create one with unitlens record")
        self.manifest = Manifest.read(self.path, fix=self.rerecord)

    @property
    def rerecord(self) -> str:
        """How to rebuild a damaged core file of this atlas."""
        return rerecord(self.path)

    def redo(self, path: str | Path) -> str:
        """The narrowest command that rebuilds one damaged file of this atlas (``unitlens.atlas.advice``)."""
        return redo_advice(self.path, self.manifest, path)

    @classmethod
    def open(cls, atlas: "Atlas | str | Path") -> "Atlas":
        """``atlas`` itself if it is an Atlas, else the atlas at that path."""
        return atlas if isinstance(atlas, Atlas) else cls(atlas)

    @property
    def complete(self) -> bool:
        return self.manifest.complete

    def require_complete(self) -> None:
        """Raise ``AtlasIncomplete`` (naming the command that resumes it) unless the record run finished."""
        if not self.complete:
            raise AtlasIncomplete(
                f"the record run of {self.path} has not finished (status {self.manifest.status}); "
                "run the same unitlens record command again to resume it"
            )

    # ------------------------------------------------------------------ identity and writing
    def identity(self) -> dict:
        """What a derived result must match to belong to this atlas: weights, data and the recorded layers."""
        m = self.manifest
        layers = "\n".join(f"{info.name}\t{info.width}" for info in m.layers
                           if info.name not in m.derived_layers)  # adding basis features leaves the identity as it was
        return {"weights_hash": m.config.weights_hash, "dataset_fingerprint": m.config.dataset_fingerprint,
                "layers": hashlib.sha256(layers.encode()).hexdigest()[:16]}

    def check_identity(self, stamp: dict | None, what: str, fix: str) -> None:
        """Refuse a derived result stamped with another atlas's identity (``stamp`` None: written before stamps
        existed, accepted). ``what`` names the result, ``fix`` says how to rebuild it."""
        if stamp is None:
            return
        mine = self.identity()
        differs = [k for k in mine if stamp.get(k) is not None and stamp.get(k) != mine[k]]
        if differs:
            theirs = ", ".join(str(stamp[k]) for k in differs)
            ours = ", ".join(str(mine[k]) for k in differs)
            raise AtlasError(f"{what} does not belong to atlas {self.path}: it was made for other "
                             f"{', '.join(k.replace('_', ' ') for k in differs)} ({theirs} != {ours}); {fix}")

    def writing(self, command: str) -> AbstractContextManager:
        """The atlas's write lock for ``command`` (see ``unitlens.atlas.lock``)."""
        return writing(self.path, command)

    # ------------------------------------------------------------------ layout
    def derived_path(self, name: str, *parts: str) -> Path:
        """Where derived result ``name`` (see ``unitlens.atlas.layout.DERIVED``) lives in this atlas."""
        return derived_path(self.path, name, *parts)

    def backend_path(self, name: str, backend: str) -> Path:
        """The folder of derived result ``name`` (``lens``, ``embeddings``) for one embedding backend."""
        return self.derived_path(name, backend_dirname(backend))

    def exemplar_file(self, layer: str) -> Path:
        return exemplar_path(self.path, layer)

    @property
    def layers(self) -> list[LayerInfo]:
        return list(self.manifest.layers)

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise UnknownLayer(f"layer '{name}' is not in atlas {self.path}; it has {[i.name for i in self.layers]}")

    def select_layers(self, layers: str | Sequence[str] | None = None, derived: bool = True) -> list[LayerInfo]:
        """The layers named by ``layers`` (names or globs; a comma-separated string allowed; None: all), in
        atlas order; a pattern that matches no layer is an error naming the atlas's layers. ``derived=False``
        leaves derived layers out (steps that run the model's own modules); naming one then is an error."""
        infos = self.layers
        if not derived:
            infos = [info for info in infos if info.name not in self.derived_layers]
        if layers is None:
            return infos
        patterns = [p.strip() for p in layers.split(",") if p.strip()] if isinstance(layers, str) else list(layers)
        names = [info.name for info in infos]
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                if not derived and any(fnmatch.fnmatchcase(name, pattern) for name in self.derived_layers):
                    raise AtlasError(f"layer '{pattern}' of atlas {self.path} is a derived layer (basis features), "
                                     "not a module of the model; this step needs the model's own layers")
                shown = ", ".join(names[:12]) + (f", ... ({len(names)} layers)" if len(names) > 12 else "")
                raise UnknownLayer(f"layer '{pattern}' is not in atlas {self.path}; it has {shown}")
        return [info for info in infos if any(fnmatch.fnmatchcase(info.name, p) for p in patterns)]

    @property
    def derived_layers(self) -> Mapping[str, Mapping]:
        """Derived layer name -> what it was made from (``parent`` layer, ``basis`` name, ...)."""
        return self.manifest.derived_layers

    def add_layers(self, layers: list[LayerInfo], units: pd.DataFrame, exemplars: dict[str, dict[str, torch.Tensor]],
                   about: dict[str, dict], command: str) -> None:
        """Add (or replace) derived layers: their exemplar files, their rows of ``units.parquet`` and their
        manifest entries, each written atomically under the write lock, the manifest last.

        ``exemplars`` maps a layer to its tensors as stored (``record.folder.exemplar_tensors``); ``about`` maps
        it to its provenance, at least ``parent`` (a recorded layer): the new layer is listed after its parent
        and the parent's other derived layers. Names of recorded layers are refused.
        """
        with self.writing(command):
            self.require_complete()
            manifest = Manifest.read(self.path, fix=self.rerecord)  # as it is now, not as it was when opened
            recorded = set(manifest.recorded_layers)
            names = [info.name for info in layers]
            for name in names:
                if name in recorded:
                    raise AtlasError(f"'{name}' is a recorded layer of atlas {self.path}; a derived layer needs "
                                     "another name")
                if about[name].get("parent") not in recorded:
                    raise AtlasError(f"derived layer '{name}': its parent '{about[name].get('parent')}' is not a "
                                     f"recorded layer of atlas {self.path}")
            for name in names:
                write_tensors(self.exemplar_file(name), exemplars[name])
            old = pd.read_parquet(self.path / UNITS)
            table = pd.concat([old[~old["layer"].isin(names)], units], ignore_index=True)
            entries = [d for d in manifest.layers if d.name not in names]
            derived = {k: v for k, v in manifest.derived_layers.items() if k not in names}
            for info in layers:
                parent = about[info.name]["parent"]
                at = max(i for i, d in enumerate(entries)
                         if d.name == parent or derived.get(d.name, {}).get("parent") == parent)
                entries.insert(at + 1, info)
                derived[info.name] = about[info.name]
            order = {d.name: i for i, d in enumerate(entries)}
            table = table.sort_values("layer", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
            write_parquet(self.path / UNITS, table)
            manifest = replace(manifest, layers=tuple(entries), derived_layers=derived).counted(table)
            manifest.write(self.path)
            self.manifest = manifest

    def remove_layers(self, names: list[str], command: str) -> None:
        """Remove derived layers and every result derived from them, under the write lock.

        First every derived result's part of these layers (``remove_layer_results``: score rows, lens layers and
        their vector tables, probe activations, labels, measures, θ maps; a damaged file stops it, named with its
        fix, before anything changes), then their rows of ``units.parquet``, then the manifest, then their
        exemplar files. The manifest is the commit point: until it is written the layers are still listed and the
        same command run again finishes the removal; after it, nothing refers to them (at most an unused exemplar
        file is left). So the manifest never lists fewer layers than the scores hold.
        """
        with self.writing(command):
            manifest = Manifest.read(self.path, fix=self.rerecord)
            derived = manifest.derived_layers
            wrong = [n for n in names if n not in derived]
            if wrong:
                raise AtlasError(f"{', '.join(wrong)}: not derived layers of atlas {self.path}; only derived layers "
                                 "can be removed (record the atlas again to change its recorded layers)")
            units = read_parquet(self.path / UNITS, fix=self.rerecord)
            remove_layer_results(self.path, names, fix=lambda path: redo_advice(self.path, manifest, path))
            units = units[~units["layer"].isin(names)].reset_index(drop=True)
            write_parquet(self.path / UNITS, units)
            manifest = replace(manifest, layers=tuple(d for d in manifest.layers if d.name not in names),
                               derived_layers={k: v for k, v in derived.items() if k not in names}).counted(units)
            manifest.write(self.path)
            self.manifest = manifest
            for name in names:
                self.exemplar_file(name).unlink(missing_ok=True)

    def units(self) -> pd.DataFrame:
        self.require_complete()
        return read_parquet(self.path / UNITS, fix=self.rerecord)

    def samples(self) -> pd.DataFrame:
        self.require_complete()
        return read_parquet(self.path / SAMPLES, fix=self.rerecord)

    def exemplars(self, layer: str) -> Exemplars:
        self.require_complete()
        self.layer(layer)
        path = self.exemplar_file(layer)
        fix = rerecord_layer(self.path, self.manifest, layer)
        arrays = read_tensors(path, fix=fix)  # ids are int32 on disk
        shapes = {k: tuple(arrays[k].shape) for k in self.EXEMPLAR_KEYS if k in arrays}
        if len(shapes) < len(self.EXEMPLAR_KEYS) or len(set(shapes.values())) != 1 or \
                len(next(iter(shapes.values()))) != 2:
            raise CorruptFile(f"{path} does not hold four (units, k) arrays {self.EXEMPLAR_KEYS} of one shape "
                              f"(found {shapes}); {fix}")
        return Exemplars(**{k: arrays[k].long() if k.endswith("_ids") else arrays[k] for k in self.EXEMPLAR_KEYS})

    def exemplar_ids(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The (C, k) top and bottom exemplar ids of a layer as stored (int32), without their activations:
        half the reading of :meth:`exemplars`, for steps that need the ids only (MIS)."""
        self.require_complete()
        self.layer(layer)
        arrays = read_tensors(self.exemplar_file(layer), fix=rerecord_layer(self.path, self.manifest, layer),
                              names=("top_ids", "bottom_ids"))
        return arrays["top_ids"], arrays["bottom_ids"]

    SCORE_COLUMNS = ("layer", "unit", "metric", "backend", "value", "params")

    def scores(self, wide: bool = False) -> pd.DataFrame:
        """All scores written so far; ``wide=True`` pivots to one row per unit, one column per metric@backend.

        A scores.parquet of another atlas (another identity stamp, or, for files written before stamps, layers or
        units this atlas does not have) is refused with an ``AtlasError``, never merged or plotted. Rows of a
        derived layer the atlas no longer lists (left by a removal that did not finish) are left out with a
        warning, never a reason to refuse the scores of every other layer; the next score write drops them."""
        path = self.derived_path("scores")
        if path.is_file():
            fix = self.redo(path)
            stamp = parquet_stamp(path, fix=fix)
            self.check_identity(stamp, f"{path}", fix)
            frame = read_parquet(path, fix=fix)
            missing = sorted(set(self.SCORE_COLUMNS) - set(frame.columns))
            if missing:
                raise CorruptFile(f"{path} has no column(s) {', '.join(missing)}; {fix}")
            gone = self.removed_layers(frame["layer"])
            if gone:
                warnings.warn(f"{path} holds scores of derived layer(s) {', '.join(gone)}, which atlas {self.path} "
                              "no longer has (left by a removal that did not finish); they are ignored, and dropped "
                              "the next time scores are written", stacklevel=2)
                frame = frame[~frame["layer"].isin(gone)].reset_index(drop=True)
            if stamp is None:
                self._check_units(frame, str(path), fix)
        else:
            frame = pd.DataFrame(columns=list(self.SCORE_COLUMNS))
        if not wide:
            return frame
        frame = frame.assign(column=frame["metric"] + "@" + frame["backend"])
        return frame.pivot_table(index=["layer", "unit"], columns="column", values="value", sort=False).reset_index()

    def labels(self, method: str | None = None, backend: str | None = None, probe: str | None = None
               ) -> pd.DataFrame:
        """Every stored unit label (of one method, backend or probe set): the ``LabelStore`` table (one row per
        label set, layer and unit; see ``unitlens.atlas.labels``)."""
        from unitlens.atlas.labels import LabelStore

        return LabelStore(self).read(method, backend, probe)

    def put_scores(self, frame: pd.DataFrame) -> None:
        """Add scores, replacing earlier rows of the same (metric, backend, layer); written atomically.

        Scoring some layers again leaves the rows of the other layers as they were.
        """
        columns = list(self.SCORE_COLUMNS)
        missing = set(columns) - set(frame.columns)
        if missing:
            raise BadInput(f"scores need columns {sorted(missing)}")
        old = self.scores()
        if len(old):
            key = ["metric", "backend", "layer"]
            hit = old[key].merge(frame[key].drop_duplicates(), on=key, how="left", indicator=True)["_merge"]
            old = old[(hit != "both").to_numpy()]
        merged = pd.concat([old, frame[columns]], ignore_index=True) if len(old) else \
            frame[columns].reset_index(drop=True)
        self._check_units(frame, "the scores to add", "score this atlas's own units")
        write_parquet(self.derived_path("scores"), merged, stamp=self.identity())

    def drop_scores(self, metrics: tuple[str, ...], backend: str) -> None:
        """Remove every score of ``metrics`` computed with ``backend`` (a step that starts again from nothing)."""
        with self.writing("drop scores"):
            scores = self.scores()
            drop = scores["metric"].isin(list(metrics)) & (scores["backend"] == backend)
            if drop.any():
                write_parquet(self.derived_path("scores"), scores[~drop].reset_index(drop=True),
                              stamp=self.identity())

    def removed_layers(self, layers: pd.Series) -> list[str]:
        """The derived-layer names (``L::NAME``) among ``layers`` that this atlas does not list (any more)."""
        listed = {info.name for info in self.manifest.layers}
        return sorted(n for n in set(layers.astype(str)) if DERIVED_SEPARATOR in n and n not in listed)

    def _check_units(self, frame: pd.DataFrame, what: str, fix: str) -> None:
        """Refuse rows of layers or units this atlas does not have (results of another atlas)."""
        if not len(frame):
            return
        widths = {info.name: info.width for info in self.layers}
        layers = set(frame["layer"].astype(str))
        foreign = sorted(layers - set(widths))
        if foreign:
            raise AtlasError(f"{what} does not belong to atlas {self.path}: it has layer(s) this atlas did not record "
                             f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); {fix}")
        top = frame.groupby("layer")["unit"].max()
        over = [f"{layer} (unit {int(u)} of {width})" for layer, u in top.items()
                if (width := widths.get(layer)) is not None and int(u) >= width]
        if over:
            raise AtlasError(f"{what} does not belong to atlas {self.path}: it has units beyond the layers' widths "
                             f"({', '.join(over[:3])}); {fix}")

    def load_model(self):
        """The model this atlas was recorded with (same source and weights; the weights hash is checked)."""
        from unitlens.zoo.factory import IN_MEMORY, load_model

        cfg = self.manifest.config
        name, weights = cfg.model, cfg.weights
        options = dict(cfg.model_options)  # num_classes, checkpoint_strict
        if not name:
            raise AtlasError(f"atlas {self.path} does not name its model; pass the model to the Python API")
        if weights == IN_MEMORY:
            raise AtlasError(f"atlas {self.path} was recorded from an nn.Module handed over in Python ({name}); the "
                             "steps that run the model need it again: pass model=as_loaded_model(module, transform)")
        try:
            if weights == "pretrained":
                loaded = load_model(name, **options)
            elif weights == "random":
                loaded = load_model(name, pretrained=False, seed=cfg.seed or 0, **options)
            elif weights == name:  # a saved module holds its weights
                loaded = load_model(name)
            else:
                loaded = load_model(name, checkpoint=weights, **options)
        except Exception as err:  # unknown names (hand-built test models), missing weights, missing checkpoints
            raise AtlasError(f"cannot load the analysed model '{name}' (weights {weights}) of atlas {self.path}: "
                             f"{err}. Pass the model to the Python API (model=LoadedModel)") from err
        want = cfg.weights_hash
        if want and loaded.weights_hash() != want:
            raise AtlasError(f"the model '{name}' loaded now (weights {weights}) is not the one atlas {self.path} "
                             f"was recorded with (weights hash {loaded.weights_hash()} != {want}); pass that model "
                             "to the Python API")
        return loaded

    def dataset(self, transform=None):
        """The recorded images as an ``ImageDataset`` with the atlas's sample ids."""
        from unitlens.data.datasets import ImageDataset

        samples = self.samples()
        spec = self.manifest.dataset.spec
        return ImageDataset(samples.drop(columns=["skipped"]), spec, transform,
                            content_hash="content_hash" in samples)

    @property
    def dataset_root(self) -> Path:
        """The folder every image of the atlas was recorded from (``manifest.dataset.root``); for atlases
        recorded before the root was kept, the deepest folder that holds every sample path."""
        root = self.manifest.dataset.root
        return Path(root) if root else self.dataset().root

    def unit(self, layer: str, index: int) -> Unit:
        """Unit ``index`` of ``layer``: statistics, exemplars, scores, images, and a notebook view."""
        from unitlens.atlas.unit import Unit

        info = self.layer(layer)
        if not 0 <= index < (info.width or 0):
            raise BadInput(f"layer {layer} has units 0 to {(info.width or 0) - 1}; there is no unit {index}")
        return Unit(self, layer, index)

    def _repr_html_(self) -> str:
        from unitlens import notebook

        m = self.manifest
        facts = {"model": m.config.model, "weights": m.config.weights,
                 "dataset": f"{m.dataset.spec} ({m.config.n_samples if m.n_images is None else m.n_images} images)",
                 "units": f"{m.n_units} in {len(m.layers)} layers", "status": m.status}
        return notebook.header(f"atlas {self.path}", facts) + notebook.table(self.summary(), "layers")

    def summary(self) -> pd.DataFrame:
        """One row per layer: type, units, constant units, non-finite units."""
        units = self.units()
        g = units.groupby("layer", sort=False)
        return pd.DataFrame({
            "type": g["type"].first(),
            "depth": g["depth"].first(),
            "units": g.size(),
            "constant": g["constant"].sum(),
            "nonfinite": (g["nonfinite"].apply(lambda s: int((s > 0).sum()))),
        }).reset_index()
