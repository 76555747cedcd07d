"""``Atlas(path)``: read access to everything a record run wrote, for every later step.

Layout::

    manifest.json                   model, weights hash, dataset fingerprint, config, versions, status
    units.parquet                   one row per unit: layer, unit, type, depth, widths, stats, constant
    samples.parquet                 one row per sample: id, path, label, metadata, skipped
    exemplars/<layer>.safetensors   top_ids/top_vals (descending), bottom_ids/bottom_vals (ascending), (C, k);
                                    ids are stored as int32 (2**31 samples at most) and read as int64
    scores.parquet                  long table: layer, unit, metric, backend, value, params (JSON)
    embeddings/<backend>/           cached image/crop embeddings (see unitlens.backends.cache)
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from unitlens.atlas.files import read_json, read_tensors, write_parquet
from unitlens.zoo.units import LayerInfo


class AtlasError(RuntimeError):
    """An atlas is missing, incomplete, or lacks what a step needs."""


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

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "manifest.json").is_file():
            raise AtlasError(f"{self.path} is not an atlas (no manifest.json); create one with unitlens record")
        self.manifest = read_json(self.path / "manifest.json")

    @classmethod
    def open(cls, atlas: "Atlas | str | Path") -> "Atlas":
        """``atlas`` itself if it is an Atlas, else the atlas at that path."""
        return atlas if isinstance(atlas, cls) else cls(atlas)

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    def _require_complete(self) -> None:
        if not self.complete:
            raise AtlasError(
                f"the record run of {self.path} has not finished (status {self.manifest.get('status')}); "
                "run the same unitlens record command again to resume it"
            )

    @property
    def layers(self) -> list[LayerInfo]:
        return [LayerInfo(**d) for d in self.manifest["layers"]]

    def layer(self, name: str) -> LayerInfo:
        for info in self.layers:
            if info.name == name:
                return info
        raise AtlasError(f"layer '{name}' is not in atlas {self.path}; it has {[i.name for i in self.layers]}")

    def select_layers(self, layers: str | list[str] | None = None) -> list[LayerInfo]:
        """The layers named by ``layers`` (names or globs; a comma-separated string allowed; None: all), in
        depth order; a pattern that matches no layer is an error naming the atlas's layers."""
        infos = self.layers
        if layers is None:
            return infos
        patterns = [p.strip() for p in layers.split(",") if p.strip()] if isinstance(layers, str) else list(layers)
        names = [info.name for info in infos]
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                shown = ", ".join(names[:12]) + (f", ... ({len(names)} layers)" if len(names) > 12 else "")
                raise AtlasError(f"layer '{pattern}' is not in atlas {self.path}; it has {shown}")
        return [info for info in infos if any(fnmatch.fnmatchcase(info.name, p) for p in patterns)]

    def units(self) -> pd.DataFrame:
        self._require_complete()
        return pd.read_parquet(self.path / "units.parquet")

    def samples(self) -> pd.DataFrame:
        self._require_complete()
        return pd.read_parquet(self.path / "samples.parquet")

    def exemplars(self, layer: str) -> Exemplars:
        self._require_complete()
        self.layer(layer)
        arrays = read_tensors(self.path / "exemplars" / f"{layer}.safetensors")  # ids are int32 on disk
        return Exemplars(**{k: v.long() if k.endswith("_ids") else v for k, v in arrays.items()})

    SCORE_COLUMNS = ("layer", "unit", "metric", "backend", "value", "params")

    def scores(self, wide: bool = False) -> pd.DataFrame:
        """All scores written so far; ``wide=True`` pivots to one row per unit, one column per metric@backend."""
        path = self.path / "scores.parquet"
        frame = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=list(self.SCORE_COLUMNS))
        if not wide:
            return frame
        frame = frame.assign(column=frame["metric"] + "@" + frame["backend"])
        return frame.pivot_table(index=["layer", "unit"], columns="column", values="value", sort=False).reset_index()

    def put_scores(self, frame: pd.DataFrame) -> None:
        """Add scores, replacing earlier rows of the same (metric, backend, layer); written atomically.

        Scoring some layers again leaves the rows of the other layers as they were.
        """
        columns = list(self.SCORE_COLUMNS)
        missing = set(columns) - set(frame.columns)
        if missing:
            raise ValueError(f"scores need columns {sorted(missing)}")
        old = self.scores()
        if len(old):
            key = ["metric", "backend", "layer"]
            hit = old[key].merge(frame[key].drop_duplicates(), on=key, how="left", indicator=True)["_merge"]
            old = old[(hit != "both").to_numpy()]
        merged = pd.concat([old, frame[columns]], ignore_index=True) if len(old) else \
            frame[columns].reset_index(drop=True)
        write_parquet(self.path / "scores.parquet", merged)

    def dataset(self, transform=None):
        """The recorded images as an ``ImageDataset`` with the atlas's sample ids."""
        from unitlens.data.datasets import ImageDataset

        samples = self.samples()
        return ImageDataset(samples.drop(columns=["skipped"]), self.manifest["dataset"]["spec"], transform)

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
