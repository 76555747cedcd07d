"""Feature visualisations in an atlas: ``featviz/<layer>/`` (the layer's ``atlas.layout.layer_stem``).

Layout::

    featviz.json      layer, the options that shaped the images, the atlas's identity (``atlas``), model input
                      normalisation, seconds spent
    images.parquet    one row per image: layer, unit, direction (top / bottom), index, activation (reached, on the
                      stored 8-bit image), natural_top / natural_bottom (the unit's most and least activating
                      natural images' activations, from the exemplars), seed, file; stamped with the identity
    images/<unit>-<direction>-<index>.png

Every file is written atomically; a batch's images are written before its rows, so a row always has its image and
a run that stops resumes after the last batch whose rows were written.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from unitlens.atlas import Atlas
from unitlens.atlas.files import atomic_write, parquet_stamp, read_json, read_parquet, write_json, write_parquet
from unitlens.atlas.layout import layer_stem
from unitlens.errors import NotComputed

META = "featviz.json"
TABLE = "images.parquet"
IMAGES = "images"
COLUMNS = ("layer", "unit", "direction", "index", "activation", "natural_top", "natural_bottom", "seed", "file")


def image_file(unit: int, direction: str, index: int) -> str:
    """The file name of one image, relative to the layer's folder."""
    return f"{IMAGES}/{int(unit)}-{direction}-{int(index)}.png"


def _png_writer(image: Image.Image) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        image.save(tmp, format="PNG")
    return write


class FeatvizStore:
    """The stored visualisations of one atlas: ``layers()``, and per layer ``meta``, ``table``, ``path``, ``image``."""

    def __init__(self, atlas: Atlas | str | Path):
        self.atlas = Atlas.open(atlas)
        self.root = self.atlas.derived_path("featviz")

    def folder(self, layer: str) -> Path:
        return self.root / layer_stem(layer)

    def fix(self, layer: str) -> str:
        return f"make them again: unitlens featviz {self.atlas.path} --layers '{layer}' --force"

    def layers(self) -> list[str]:
        """The layers that have visualisations, in atlas order."""
        if not self.root.is_dir():
            return []
        found = {read_json(p, fix=self.fix(p.parent.name)).get("layer") for p in self.root.glob(f"*/{META}")}
        return [info.name for info in self.atlas.layers if info.name in found]

    def has(self, layer: str) -> bool:
        return (self.folder(layer) / META).is_file()

    def meta(self, layer: str) -> dict:
        path = self.folder(layer) / META
        if not path.is_file():
            raise NotComputed(f"layer {layer} of atlas {self.atlas.path} has no feature visualisations yet; run "
                              f"unitlens featviz {self.atlas.path} --layers '{layer}'")
        meta = read_json(path, fix=self.fix(layer))
        self.atlas.check_identity(meta.get("atlas"), f"the visualisations in {path.parent}", self.fix(layer))
        return meta

    def table(self, layer: str) -> pd.DataFrame:
        """One row per stored image of ``layer`` (empty before the first batch finished)."""
        self.meta(layer)
        path = self.folder(layer) / TABLE
        if not path.is_file():
            return pd.DataFrame(columns=list(COLUMNS))
        self.atlas.check_identity(parquet_stamp(path, fix=self.fix(layer)), str(path), self.fix(layer))
        return read_parquet(path, fix=self.fix(layer))

    def path(self, layer: str, file: str) -> Path:
        return self.folder(layer) / file

    def image(self, layer: str, file: str) -> Image.Image:
        return Image.open(self.path(layer, file)).convert("RGB")

    def unit_images(self, layer: str, unit: int, direction: str, k: int | None = None) -> list[Image.Image]:
        """The first ``k`` (all: None) images of one unit and direction, in index order."""
        t = self.table(layer)
        rows = t[(t["unit"] == unit) & (t["direction"] == direction)].sort_values("index")
        return [self.image(layer, f) for f in rows["file"].head(k if k is not None else len(rows))]

    # ------------------------------------------------------------------ writing (under the atlas's write lock)
    def start(self, layer: str, meta: dict) -> None:
        """Begin (or go on with) a layer: write its meta (with the atlas's identity)."""
        write_json(self.folder(layer) / META, {**meta, "layer": layer, "atlas": self.atlas.identity()})

    def clear(self, layer: str) -> None:
        shutil.rmtree(self.folder(layer), ignore_errors=True)

    def add(self, layer: str, rows: pd.DataFrame, images: torch.Tensor) -> None:
        """Store a batch: its images first, then its rows appended to the table."""
        folder = self.folder(layer)
        for file, image in zip(rows["file"], images):
            atomic_write(folder / file, _png_writer(Image.fromarray(image.permute(1, 2, 0).numpy())))
        old = self.table(layer)
        table = pd.concat([old, rows[list(COLUMNS)]], ignore_index=True) if len(old) else rows[list(COLUMNS)]
        write_parquet(folder / TABLE, table.reset_index(drop=True), stamp=self.atlas.identity())

    def update_meta(self, layer: str, **changes) -> None:
        path = self.folder(layer) / META
        write_json(path, {**read_json(path), **changes})


def layer_summary(table: pd.DataFrame) -> dict:
    """How far a layer's visualisations drive their units, against the units' natural extremes: mean activation
    reached up and down, the mean most / least activating natural activation, and the share of images beyond them."""
    top, bottom = table[table["direction"] == "top"], table[table["direction"] == "bottom"]
    return {"units": int(table["unit"].nunique()), "images": len(table),
            "top reached": float(top["activation"].mean()), "natural top": float(top["natural_top"].mean()),
            "above natural top": float((top["activation"] > top["natural_top"]).mean()),
            "bottom reached": float(bottom["activation"].mean()),
            "natural bottom": float(bottom["natural_bottom"].mean()),
            "below natural bottom": float((bottom["activation"] < bottom["natural_bottom"]).mean())}
