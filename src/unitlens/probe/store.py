"""The stored probe pass of an atlas: activations of every unit of some layers on a labelled probe set.

Layout, under ``Atlas.derived_path("probe", <name>)``::

    meta.json                      identity stamp of the atlas, spec, concepts, layers (units each), pooling,
                                   images, skipped files, seconds; written last
    images.parquet                 id (0..N-1), path
    membership.safetensors         (N, K) uint8: image n shows concept k
    layers/<layer>.safetensors     activations (U, N) float32, reduced per image as the record pass does
    embeddings/<backend>.safetensors  (N, D) normalised image embeddings per backend (with its weights id)
    evaluation/                    the last ``unitlens lens evaluate-labels`` tables and figure

Labels made from a probe set live in the atlas's label store (``unitlens.atlas.labels``, probe = the set's name);
recording the set again drops them. Units x images of one pass are bounded (``MAX_ACTIVATIONS``), so the whole
matrix of a layer fits in memory.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unitlens.atlas import Atlas
from unitlens.atlas.files import (
    read_json,
    read_parquet,
    read_tensor_metadata,
    read_tensors,
    safe_name,
    write_json,
    write_parquet,
    write_tensors,
)
from unitlens.atlas.labels import LabelStore
from unitlens.atlas.layout import layer_stem
from unitlens.errors import BadInput, NotComputed
from unitlens.probe.defaults import PROBE_NAME

FORMAT = 1


class ProbeStore:
    """Read (and, for the probe pass, write) ``<atlas>/probe/<name>/``."""

    def __init__(self, atlas: Atlas | str | Path, name: str = PROBE_NAME):
        self.atlas = Atlas.open(atlas)
        if not name or safe_name(name, hashed=False) != name:
            raise BadInput(f"probe set name '{name}' may use letters, digits, '.', '_' and '-' only")
        self.name = name
        self.path = self.atlas.derived_path("probe", name)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, atlas: Atlas | str | Path, name: str = PROBE_NAME) -> "ProbeStore":
        """The probe pass ``name`` of ``atlas``; ``NotComputed`` naming the command when there is none."""
        store = cls(atlas, name)
        if not (store.path / "meta.json").is_file():
            have = cls.names(store.atlas)
            raise NotComputed(f"atlas {store.atlas.path} has no probe pass '{name}'"
                              + (f" (it has {', '.join(have)}; choose one with --probe)" if have else "")
                              + f"; run unitlens probe {store.atlas.path} --data PROBE_SPEC"
                              + (f" --name {name}" if name != PROBE_NAME else ""))
        store.atlas.check_identity(store.meta.get("identity"), f"probe pass '{name}'",
                                   f"run unitlens probe {store.atlas.path} --data {store.meta.get('spec')} again")
        return store

    @staticmethod
    def names(atlas: Atlas | str | Path) -> list[str]:
        root = Atlas.open(atlas).derived_path("probe")
        return sorted(p.parent.name for p in root.glob("*/meta.json"))

    @cached_property
    def meta(self) -> dict:
        return read_json(self.path / "meta.json", fix=self.atlas.redo(self.path / "meta.json"))

    # ------------------------------------------------------------------ contents
    @property
    def concepts(self) -> list[str]:
        return list(self.meta["concepts"])

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])

    @property
    def n_images(self) -> int:
        return int(self.meta["n_images"])

    @cached_property
    def membership(self) -> np.ndarray:
        """(N, K) bool: image n shows concept k."""
        path = self.path / "membership.safetensors"
        return read_tensors(path, fix=self.atlas.redo(path))["membership"].numpy().astype(bool)

    @cached_property
    def images(self) -> pd.DataFrame:
        return read_parquet(self.path / "images.parquet", fix=self.atlas.redo(self.path / "images.parquet"))

    def resolve(self, layers=None) -> list[str]:
        """Probed layer names for ``layers`` (names/globs/None: all probed), in atlas order."""
        wanted = [info.name for info in self.atlas.select_layers(layers)] if layers is not None else self.layers
        missing = [n for n in wanted if n not in self.meta["layers"]]
        if missing:
            raise NotComputed(f"layer(s) {', '.join(missing)} are not in probe pass '{self.name}' of "
                              f"{self.atlas.path} (it has {', '.join(self.layers)}); run unitlens probe "
                              f"{self.atlas.path} --data {self.meta.get('spec')} --layers {','.join(missing)}"
                              + (f" --name {self.name}" if self.name != PROBE_NAME else ""))
        order = [info.name for info in self.atlas.layers]
        return sorted(wanted, key=order.index)

    def _layer_file(self, layer: str) -> Path:
        return self.path / "layers" / f"{layer_stem(layer)}.safetensors"

    def activations(self, layer: str) -> torch.Tensor:
        """(U, N) float32 activations of every unit of ``layer`` on every probe image."""
        self.resolve([layer])
        return read_tensors(self._layer_file(layer), fix=self.atlas.redo(self._layer_file(layer)))["activations"]

    # ------------------------------------------------------------------ writing (the probe pass)
    def write(self, spec, paths: list[Path], membership: np.ndarray, activations: dict[str, torch.Tensor],
              info: dict) -> None:
        """Replace this probe set: images, membership, one file per layer, then the metadata that lists them."""
        import shutil

        for sub in ("layers", "embeddings", "labels", "evaluation"):
            shutil.rmtree(self.path / sub, ignore_errors=True)
        LabelStore(self.atlas).drop(probe=self.name)  # labelled from the images this pass replaces
        write_parquet(self.path / "images.parquet",
                      pd.DataFrame({"id": np.arange(len(paths)), "path": [str(p) for p in paths]}))
        write_tensors(self.path / "membership.safetensors",
                      {"membership": torch.from_numpy(membership.astype(np.uint8))})
        for layer, acts in activations.items():
            write_tensors(self._layer_file(layer), {"activations": acts.float().contiguous()},
                          metadata={"layer": layer})
        meta = {"format": FORMAT, "name": self.name, "identity": self.atlas.identity(), "spec": spec.source,
                "kind": spec.kind, "concepts": spec.concepts, "n_images": len(paths),
                "layers": {n: int(a.shape[0]) for n, a in activations.items()}, **info}
        write_json(self.path / "meta.json", meta)
        self.__dict__.pop("meta", None)
        self.__dict__.pop("membership", None)
        self.__dict__.pop("images", None)

    # ------------------------------------------------------------------ image embeddings
    def embeddings(self, backend, progress: bool = False) -> torch.Tensor:
        """(N, D) normalised embeddings of the probe images in ``backend``'s space, computed once per backend and
        weights (kept under ``embeddings/``)."""
        from unitlens.lens.probes import embed_paths

        path = self.path / "embeddings" / f"{safe_name(backend.name, default='backend')}.safetensors"
        if path.is_file():
            fix = self.atlas.redo(path)
            if read_tensor_metadata(path, fix=fix).get("weights", "") == backend.weights_id:
                return read_tensors(path, fix=fix)["embeddings"]
        vectors = embed_paths(backend, list(self.images["path"]), atlas=self.atlas, progress=progress)
        with self.atlas.writing("probe embeddings"):
            write_tensors(path, {"embeddings": vectors.float()},
                          metadata={"backend": backend.name, "weights": backend.weights_id})
        return vectors

    # ------------------------------------------------------------------ derived tables
    def write_table(self, relative: str, frame: pd.DataFrame) -> Path:
        path = self.path / relative
        write_parquet(path, frame)
        return path
