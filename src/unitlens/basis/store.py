"""Fitted bases in an atlas: ``basis/<layer>/<NAME>/encoder.safetensors`` (the encoder's tensors) and
``basis.json`` (layer, kind, positions, options, fit metrics, provenance, the atlas's identity when it was fitted).

A name is unique per layer (``sae-x8`` can be fitted on several layers); ``<layer>::<NAME>`` names one basis, and
is the derived layer that holds its features once recorded (``unitlens basis record``).
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import read_json, read_tensor_metadata, read_tensors, write_json, write_tensors
from unitlens.atlas.layout import DERIVED_SEPARATOR, exemplar_path
from unitlens.basis.encoder import Encoder
from unitlens.errors import BadInput, BasisNotComputed, CorruptFile

META = "basis.json"
TENSORS = "encoder.safetensors"
SEPARATOR = DERIVED_SEPARATOR  # derived layer = <layer>::<basis name>


def check_name(name: str) -> None:
    """A basis name is a plain file name: letters, digits, '.', '_' and '-', not starting with '.'."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name or ""):
        raise BadInput(f"basis name '{name}' must be letters, digits, '.', '_' and '-' (not starting with '.'), "
                       "e.g. sae-x8")


def derived_layer(layer: str, name: str) -> str:
    """The name of the derived layer that holds basis ``name``'s features of ``layer``."""
    return f"{layer}{SEPARATOR}{name}"


@dataclass
class Basis:
    """A fitted basis of one layer: its encoder and its metadata (``basis.json``)."""

    name: str
    encoder: Encoder
    meta: dict

    @property
    def layer(self) -> str:
        return self.meta["layer"]

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def positions(self) -> str:
        return self.meta["positions"]

    @property
    def derived_layer(self) -> str:
        return derived_layer(self.layer, self.name)


def basis_path(atlas: Atlas, layer: str, name: str) -> Path:
    """``basis/<layer>/<name>/`` (the layer under its file-safe name)."""
    return atlas.derived_path("basis", exemplar_path("", layer).stem, name)


def list_bases(atlas: Atlas | str | Path) -> list[str]:
    """The bases fitted in an atlas, as their derived layer names ``<layer>::<name>``, sorted.

    Names come from the folders (``basis/<layer>/<name>/``), so one damaged ``basis.json`` fails only the commands
    that load that basis."""
    atlas = Atlas.open(atlas)
    root = atlas.derived_path("basis")
    if not root.is_dir():
        return []
    layer_of = {exemplar_path("", info.name).stem: info.name for info in atlas.layers}
    found = []
    for meta in root.glob(f"*/*/{META}"):
        layer = layer_of.get(meta.parent.parent.name)
        if layer is None:  # a folder of a layer the atlas does not have: its basis.json says which
            layer = read_json(meta, fix=atlas.redo(meta)).get("layer", meta.parent.parent.name)
        found.append(derived_layer(layer, meta.parent.name))
    return sorted(found)


def resolve(atlas: Atlas, name: str, layer: str | None = None) -> list[tuple[str, str]]:
    """(layer, name) of the bases ``name`` means: ``<layer>::<name>`` one, a plain name the basis of that name
    on ``layer``, or on every layer that has one. Raises ``BasisNotComputed`` when none matches."""
    if SEPARATOR in name:
        layer, name = name.rsplit(SEPARATOR, 1)
    check_name(name)
    found = [tuple(b.rsplit(SEPARATOR, 1)) for b in list_bases(atlas)]
    hits = [(lay, n) for lay, n in found if n == name and (layer is None or lay == layer)]
    if not hits:
        where = f" on layer {layer}" if layer else ""
        raise BasisNotComputed(f"atlas {atlas.path} has no basis '{name}'{where} (it has: "
                               f"{', '.join(list_bases(atlas)) or 'none'}); fit one with unitlens basis fit "
                               f"{atlas.path} --layer {layer or 'LAYER'} --kind KIND --name {name}")
    return hits


def exists(atlas: Atlas, layer: str, name: str) -> bool:
    return (basis_path(atlas, layer, name) / META).is_file()


def save_basis(atlas: Atlas, basis: Basis) -> Path:
    """Write a basis (tensors first, then the metadata that makes it visible); call under the atlas's write lock."""
    folder = basis_path(atlas, basis.layer, basis.name)
    settings = json.dumps(basis.encoder.settings())
    write_tensors(folder / TENSORS, basis.encoder.tensors(), metadata={"settings": settings})
    write_json(folder / META, basis.meta)
    return folder


def remove_basis(atlas: Atlas, layer: str, name: str) -> None:
    """Delete a basis's folder (its derived layer, if recorded, is removed by the caller)."""
    folder = basis_path(atlas, layer, name)
    if folder.is_dir():
        shutil.rmtree(folder)


def load_basis(atlas: Atlas | str | Path, name: str, layer: str | None = None) -> Basis:
    """A fitted basis of an atlas (``name``: ``<layer>::<name>``, or a name with ``layer`` or unique in the atlas);
    raises ``BasisNotComputed`` (naming the fit command) if there is none, ``BadInput`` if a plain name is on
    several layers, and ``AtlasError`` if it was fitted on another atlas (other weights, data or layers)."""
    atlas = Atlas.open(atlas)
    hits = resolve(atlas, name, layer)
    if len(hits) > 1:
        raise BadInput(f"basis '{name}' exists on several layers of {atlas.path}: "
                       f"{', '.join(derived_layer(*h) for h in hits)}; name one as LAYER::{hits[0][1]}")
    layer, name = hits[0]
    folder = basis_path(atlas, layer, name)
    fix = atlas.redo(folder / META)  # fit that one basis again (and record it, if it was)
    damaged = f"basis '{name}' of layer {layer} is damaged; {fix}"
    meta = read_json(folder / META, fix=damaged)
    atlas.check_identity(meta.get("identity"), f"basis '{name}' of {layer}", fix)
    try:
        settings = json.loads(read_tensor_metadata(folder / TENSORS, fix=damaged)["settings"])
        encoder = Encoder.from_stored(read_tensors(folder / TENSORS, fix=damaged), settings)
    except (KeyError, TypeError, ValueError) as err:  # readable, but not what save_basis writes
        raise CorruptFile(f"{folder / TENSORS} does not hold an encoder ({type(err).__name__}: {err}); "
                          f"{damaged}") from err
    return Basis(name, encoder, meta)


def bases_table(atlas: Atlas | str | Path) -> pd.DataFrame:
    """One row per fitted basis of ``atlas``: basis (``<layer>::<name>``), kind, positions, features, fit metrics
    (r2, dead_features, mean_active) and whether its features are recorded."""
    atlas = Atlas.open(atlas)
    rows = []
    for name in list_bases(atlas):
        b = load_basis(atlas, name)
        m = b.meta.get("metrics", {})
        rows.append({"basis": name, "kind": b.kind, "positions": b.positions, "features": b.encoder.features,
                     "r2": m.get("r2"), "dead_features": m.get("dead_features"), "mean_active": m.get("mean_active"),
                     "recorded": name in atlas.derived_layers})
    return pd.DataFrame(rows, columns=["basis", "kind", "positions", "features", "r2", "dead_features", "mean_active",
                                       "recorded"])
