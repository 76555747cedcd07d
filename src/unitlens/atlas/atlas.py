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
        """The number of exemplars kept per unit and end (the second dimension of every tensor)."""
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
        """The narrowest command that rebuilds one damaged file of this atlas (``unitlens.atlas.advice``).

        Parameters
        ----------
        path : str or Path
            A file inside this atlas (a core file, an exemplar file or a derived result).

        Returns
        -------
        str
            The advice to put into an error message, e.g. ``run unitlens mis ... again``.
        """
        return redo_advice(self.path, self.manifest, path)

    @classmethod
    def open(cls, atlas: "Atlas | str | Path") -> "Atlas":
        """``atlas`` itself if it is an Atlas, else the atlas at that path."""
        return atlas if isinstance(atlas, Atlas) else cls(atlas)

    @property
    def complete(self) -> bool:
        """Whether the record run finished (``manifest.status`` is complete)."""
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
        """What a derived result must match to belong to this atlas: weights, data and the recorded layers.

        Derived layers (basis features) are left out, so adding them keeps the identity.

        Returns
        -------
        dict
            ``weights_hash``, ``dataset_fingerprint`` and ``layers`` (a 16-hex-digit hash of the recorded
            layers' names and widths); derived results store it as their stamp.
        """
        m = self.manifest
        layers = "\n".join(f"{info.name}\t{info.width}" for info in m.layers
                           if info.name not in m.derived_layers)  # adding basis features leaves the identity as it was
        return {"weights_hash": m.config.weights_hash, "dataset_fingerprint": m.config.dataset_fingerprint,
                "layers": hashlib.sha256(layers.encode()).hexdigest()[:16]}

    def check_identity(self, stamp: dict | None, what: str, fix: str) -> None:
        """Refuse a derived result stamped with another atlas's identity.

        Parameters
        ----------
        stamp : dict or None
            The result's stored identity (see :meth:`identity`); None (written before stamps existed) is
            accepted, and so are keys the stamp lacks.
        what : str
            Names the result in the error message (usually its path).
        fix : str
            Says how to rebuild the result, appended to the error message.

        Raises
        ------
        AtlasError
            If a stamped weights hash, dataset fingerprint or layer hash differs from this atlas's.
        """
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
        """The atlas's write lock for ``command`` (see ``unitlens.atlas.lock``).

        Parameters
        ----------
        command : str
            What is writing, shown to another process that finds the atlas locked.

        Returns
        -------
        AbstractContextManager
            Holds the lock while the ``with`` block runs; a second writer is refused with a clear error.
        """
        return writing(self.path, command)

    # ------------------------------------------------------------------ layout
    def derived_path(self, name: str, *parts: str) -> Path:
        """Where derived result ``name`` (see ``unitlens.atlas.layout.DERIVED``) lives in this atlas.

        Parameters
        ----------
        name : str
            A key of ``unitlens.atlas.layout.DERIVED`` (``scores``, ``lens``, ``relevance``, ...).
        *parts : str
            Path components below that result's file or folder.

        Returns
        -------
        Path
            The path; nothing is created.
        """
        return derived_path(self.path, name, *parts)

    def backend_path(self, name: str, backend: str) -> Path:
        """The folder of derived result ``name`` (``lens``, ``embeddings``) for one embedding backend.

        Parameters
        ----------
        name : str
            A derived result kept per backend (``lens``, ``embeddings``, ``pairwise``).
        backend : str
            The backend's name (``clip:ViT-B-32``, ...); made safe for a folder name.

        Returns
        -------
        Path
            The folder; nothing is created.
        """
        return self.derived_path(name, backend_dirname(backend))

    def exemplar_file(self, layer: str) -> Path:
        """The safetensors file that holds a layer's exemplars (derived layers under a safe file name).

        Parameters
        ----------
        layer : str
            A layer name (``blocks.6.0.conv_pwl`` or a derived ``L::NAME``).

        Returns
        -------
        Path
            ``exemplars/<layer>.safetensors`` in this atlas; it need not exist.
        """
        return exemplar_path(self.path, layer)

    @property
    def layers(self) -> list[LayerInfo]:
        """Every layer of the atlas in order, recorded and derived (a copy of ``manifest.layers``)."""
        return list(self.manifest.layers)

    def layer(self, name: str) -> LayerInfo:
        """One layer's entry in the manifest.

        Parameters
        ----------
        name : str
            The exact layer name (no globs; see :meth:`select_layers`).

        Returns
        -------
        LayerInfo
            Its name, module type, depth and width (number of units).

        Raises
        ------
        UnknownLayer
            If the atlas has no such layer; the message lists the layers it has.
        """
        for info in self.layers:
            if info.name == name:
                return info
        raise UnknownLayer(f"layer '{name}' is not in atlas {self.path}; it has {[i.name for i in self.layers]}")

    def select_layers(self, layers: str | Sequence[str] | None = None, derived: bool = True) -> list[LayerInfo]:
        """The layers named by ``layers``, in atlas order.

        Parameters
        ----------
        layers : str, sequence of str or None
            Layer names or globs (``blocks.6.*``); a comma-separated string is allowed; None selects all.
        derived : bool
            False leaves derived layers out (for steps that run the model's own modules); naming one then is
            an error.

        Returns
        -------
        list of LayerInfo
            The matching layers in atlas order.

        Raises
        ------
        UnknownLayer
            If a pattern matches no layer (the message lists the atlas's layers).
        AtlasError
            If ``derived=False`` and a pattern names a derived layer.
        """
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
        """Add (or replace) derived layers such as the features of a fitted basis.

        Their exemplar files, their rows of ``units.parquet`` and their manifest entries are each written
        atomically under the write lock, the manifest last. A new layer is listed after its parent and the
        parent's other derived layers.

        Parameters
        ----------
        layers : list of LayerInfo
            The new layers (names ``L::NAME``).
        units : pandas.DataFrame
            Their rows of ``units.parquet`` (the columns of :meth:`units`).
        exemplars : dict
            Layer name -> its tensors as stored (``top_ids``, ``top_vals``, ``bottom_ids``, ``bottom_vals``,
            each (C, k); see ``unitlens.recording.folder.exemplar_tensors``).
        about : dict
            Layer name -> its provenance, at least ``parent`` (a recorded layer); stored in
            ``manifest.derived_layers``.
        command : str
            The command that writes, for the write lock.

        Raises
        ------
        AtlasError
            If a name is that of a recorded layer, or a parent is not a recorded layer.
        AtlasIncomplete
            If the record run has not finished.
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

        Parameters
        ----------
        names : list of str
            Derived layer names (``L::NAME``).
        command : str
            The command that writes, for the write lock.

        Raises
        ------
        AtlasError
            If a name is not a derived layer of this atlas (recorded layers are never removed).
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
        """The unit table ``units.parquet``.

        Returns
        -------
        pandas.DataFrame
            One row per unit: ``layer``, ``unit``, ``type``, ``depth``, widths, activation statistics,
            ``constant`` (a unit that never varies) and ``nonfinite`` (count of NaN/inf activations).

        Raises
        ------
        AtlasIncomplete
            If the record run has not finished.
        """
        self.require_complete()
        return read_parquet(self.path / UNITS, fix=self.rerecord)

    def samples(self) -> pd.DataFrame:
        """The sample table ``samples.parquet``.

        Returns
        -------
        pandas.DataFrame
            One row per sample: ``id`` (the index every exemplar id refers to), ``path``, ``label``, metadata and
            ``skipped`` (an image that could not be read).

        Raises
        ------
        AtlasIncomplete
            If the record run has not finished.
        """
        self.require_complete()
        return read_parquet(self.path / SAMPLES, fix=self.rerecord)

    def exemplars(self, layer: str) -> Exemplars:
        """A layer's most and least activating samples per unit.

        Parameters
        ----------
        layer : str
            A layer name (recorded or derived).

        Returns
        -------
        Exemplars
            ``top_ids``/``top_vals`` (descending) and ``bottom_ids``/``bottom_vals`` (ascending), each (C, k)
            for C units; ids are int64 sample ids (rows of :meth:`samples`), values the units' activations.

        Raises
        ------
        UnknownLayer
            If the atlas has no such layer.
        CorruptFile
            If the exemplar file is missing or damaged (the message names the command that rebuilds it).
        """
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
        """The top and bottom exemplar ids of a layer as stored, without their activations.

        Half the reading of :meth:`exemplars`, for steps that need the ids only (MIS).

        Parameters
        ----------
        layer : str
            A layer name (recorded or derived).

        Returns
        -------
        tuple of torch.Tensor
            ``(top_ids, bottom_ids)``, each (C, k) int32 as stored.
        """
        self.require_complete()
        self.layer(layer)
        arrays = read_tensors(self.exemplar_file(layer), fix=rerecord_layer(self.path, self.manifest, layer),
                              names=("top_ids", "bottom_ids"))
        return arrays["top_ids"], arrays["bottom_ids"]

    SCORE_COLUMNS = ("layer", "unit", "metric", "backend", "value", "params")

    def scores(self, wide: bool = False) -> pd.DataFrame:
        """All scores written so far.

        A scores.parquet of another atlas (another identity stamp, or, for files written before stamps, layers or
        units this atlas does not have) is refused with an ``AtlasError``, never merged or plotted. Rows of a
        derived layer the atlas no longer lists (left by a removal that did not finish) are left out with a
        warning, never a reason to refuse the scores of every other layer; the next score write drops them.

        Parameters
        ----------
        wide : bool
            False: the long table; True: one row per unit (``layer``, ``unit``), one column per
            ``metric@backend``.

        Returns
        -------
        pandas.DataFrame
            Long: columns ``layer``, ``unit``, ``metric``, ``backend``, ``value``, ``params`` (JSON); empty with
            these columns when nothing was scored.

        Raises
        ------
        AtlasError
            If scores.parquet belongs to another atlas.
        CorruptFile
            If scores.parquet is damaged or lacks a column.
        """
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
        """Every stored unit label, optionally of one method, backend or probe set.

        Parameters
        ----------
        method : str, optional
            Keep the labels of this labelling method only.
        backend : str, optional
            Keep the labels made with this embedding backend only.
        probe : str, optional
            Keep the labels made against this probe (concept) set only.

        Returns
        -------
        pandas.DataFrame
            The ``LabelStore`` table: one row per label set, layer and unit (see ``unitlens.atlas.labels``).
        """
        from unitlens.atlas.labels import LabelStore

        return LabelStore(self).read(method, backend, probe)

    def put_scores(self, frame: pd.DataFrame) -> None:
        """Add scores, replacing earlier rows of the same (metric, backend, layer); written atomically.

        Scoring some layers again leaves the rows of the other layers as they were. The file is stamped with
        :meth:`identity`.

        Parameters
        ----------
        frame : pandas.DataFrame
            Long score rows with the columns ``layer``, ``unit``, ``metric``, ``backend``, ``value``, ``params``.

        Raises
        ------
        BadInput
            If a column is missing.
        AtlasError
            If the rows name layers or units this atlas does not have.
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
        """Remove every score of ``metrics`` computed with ``backend`` (a step that starts again from nothing).

        Parameters
        ----------
        metrics : tuple of str
            Metric names (``mis``, ``clarity``, ...).
        backend : str
            The backend those scores were computed with.
        """
        with self.writing("drop scores"):
            scores = self.scores()
            drop = scores["metric"].isin(list(metrics)) & (scores["backend"] == backend)
            if drop.any():
                write_parquet(self.derived_path("scores"), scores[~drop].reset_index(drop=True),
                              stamp=self.identity())

    def removed_layers(self, layers: pd.Series) -> list[str]:
        """The derived-layer names (``L::NAME``) among ``layers`` that this atlas does not list (any more).

        Parameters
        ----------
        layers : pandas.Series
            Layer names, e.g. the ``layer`` column of a derived result.

        Returns
        -------
        list of str
            Sorted names left by a removal that did not finish; empty when all is consistent.
        """
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
        """The model this atlas was recorded with (same source and weights; the weights hash is checked).

        Returns
        -------
        LoadedModel
            The model, its preprocessing transform and its metadata.

        Raises
        ------
        AtlasError
            If the model cannot be loaded again (recorded from an in-memory module, unknown name, missing
            checkpoint) or its weights differ; pass the model to the Python API then.
        """
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
        """The recorded images as an ``ImageDataset`` with the atlas's sample ids.

        Parameters
        ----------
        transform : callable, optional
            Applied to each PIL image when read (the model's preprocessing); None returns PIL images.

        Returns
        -------
        ImageDataset
            The samples of :meth:`samples` (skipped ones included) read from the recorded dataset.
        """
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
        """Unit ``index`` of ``layer``: statistics, exemplars, scores, images, and a notebook view.

        Parameters
        ----------
        layer : str
            A layer name (recorded or derived).
        index : int
            The unit's index in the layer, 0 to width - 1.

        Returns
        -------
        Unit
            A lazy view; nothing is read until asked for.

        Raises
        ------
        UnknownLayer
            If the atlas has no such layer.
        BadInput
            If ``index`` is out of range.
        """
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
        """One row per layer: type, units, constant units, non-finite units.

        Returns
        -------
        pandas.DataFrame
            Columns ``layer``, ``type``, ``depth``, ``units``, ``constant`` (units that never vary) and
            ``nonfinite`` (units with NaN/inf activations).
        """
        units = self.units()
        g = units.groupby("layer", sort=False)
        return pd.DataFrame({
            "type": g["type"].first(),
            "depth": g["depth"].first(),
            "units": g.size(),
            "constant": g["constant"].sum(),
            "nonfinite": (g["nonfinite"].apply(lambda s: int((s > 0).sum()))),
        }).reset_index()
