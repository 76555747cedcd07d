"""The lens store of an atlas for one backend: θ per unit, the concept examples and their embeddings, and the
vector table that search runs on.

Layout, under ``Atlas.backend_path("lens", backend)``::

    meta.json                    backend name, embedding width, weights_id, the atlas's identity (checked on
                                 open: a store of another atlas is refused), per layer: units, m, crop and the
                                 embedding's options, and the options of the last measures; written last
    layers/<layer>.safetensors   theta (U, D): mean of the normalised example embeddings (not re-normalised);
                                 ids, vals, mask (U, m): the concept examples; boxes (U, m, 4), has_box (U, m):
                                 their crop boxes; example_index (U, m) into example_vectors (n, D), which holds
                                 each distinct (image, crop) embedding of the layer once; constant (U,)
    vectors.lancedb/             LanceDB database, one table per layer, columns layer, unit, vector (θ / ‖θ‖)
    null_image.safetensors       the image-probe null: mean normalised embedding of a spread of dataset images
    measures.parquet             per-layer redundancy (labels: the atlas's label store, ``unitlens.atlas.labels``)

Search has two engines that rank identically: ``exact`` (one matrix product over the θ table in memory) and
``lancedb`` (a flat, exhaustive dot-product scan of the LanceDB table). Without the ``lancedb`` package the
vector table is not written and ``exact`` is used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import (
    read_json,
    read_parquet,
    read_tensors,
    write_json,
    write_parquet,
    write_tensors,
)
from unitlens.atlas.labels import LabelStore
from unitlens.atlas.layout import backend_dirname, layer_stem
from unitlens.errors import BadInput, CorruptFile, LensError, NotEmbedded
from unitlens.lens.defaults import DEFAULT_LENS_BACKEND, ENGINES

FORMAT = 1


def lancedb_available() -> bool:
    try:
        import lancedb  # noqa: F401
    except ImportError:
        return False
    return True


def _table_name(layer: str) -> str:
    """A layer's file and LanceDB table name (letters, digits, '_', '-' and '.'; others replaced, plus a hash)."""
    return layer_stem(layer)


@dataclass
class LayerLens:
    """Everything the lens keeps for one layer (all CPU tensors)."""

    layer: str
    theta: torch.Tensor  # (U, D) mean of normalised example embeddings
    ids: torch.Tensor  # (U, m)
    vals: torch.Tensor  # (U, m)
    mask: torch.Tensor  # (U, m) bool
    boxes: torch.Tensor  # (U, m, 4)
    has_box: torch.Tensor  # (U, m) bool
    example_index: torch.Tensor  # (U, m) rows of example_vectors (-1 where masked)
    example_vectors: torch.Tensor  # (n, D) normalised embeddings of the distinct examples
    constant: torch.Tensor  # (U,) bool

    @property
    def units(self) -> torch.Tensor:
        return torch.arange(self.theta.shape[0])

    @property
    def vectors(self) -> torch.Tensor:
        """θ / ‖θ‖, the unit vectors every cosine is taken with (U, D)."""
        return F.normalize(self.theta, dim=-1)

    @property
    def examples(self) -> torch.Tensor:
        """(U, m, D) normalised example embeddings, zero rows where ``mask`` is false."""
        idx = self.example_index.clamp_min(0)
        return self.example_vectors[idx] * self.mask[..., None]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in ("theta", "ids", "vals", "mask", "boxes", "has_box", "example_index",
                                              "example_vectors", "constant")}


class LensStore:
    """Read and write ``<atlas>/lens/<backend>/``. ``LensStore.open(atlas, backend)`` finds an existing one."""

    def __init__(self, atlas: Atlas | str | Path, backend: str, dim: int | None = None, create: bool = False):
        self.atlas = atlas if isinstance(atlas, Atlas) else Atlas(atlas)
        self.backend = backend
        self.path = self.atlas.backend_path("lens", backend)
        meta_path = self.path / "meta.json"
        if meta_path.is_file():
            self.meta = read_json(meta_path, fix=self.fix)
            self.atlas.check_identity(self.meta.get("atlas"), f"the lens store {self.path}", self.fix)
            if self.meta.get("backend") != backend:
                raise LensError(f"{self.path} holds lens vectors of backend '{self.meta.get('backend')}', "
                                f"not '{backend}'")
            if dim is not None and self.meta.get("dim") != dim:
                raise LensError(f"{self.path} holds {self.meta.get('dim')}-d vectors but backend '{backend}' gives "
                                f"{dim}-d; re-embed with --force")
        elif create:
            self.meta = {"backend": backend, "dim": dim, "format": FORMAT, "layers": {}, "atlas": self.atlas.identity()}
        else:
            raise NotEmbedded(f"atlas {self.atlas.path} has not been embedded with backend '{backend}'; run "
                            f"unitlens lens embed {self.atlas.path} --backend {backend}")
        self._cache: dict[str, LayerLens] = {}

    @property
    def fix(self) -> str:
        """How to rebuild this store when a file of it is damaged or belongs to another atlas."""
        return f"delete {self.path} and embed again: unitlens lens embed {self.atlas.path} --backend {self.backend}"

    # ------------------------------------------------------------------ finding stores
    @staticmethod
    def backends(atlas: Atlas | str | Path) -> list[str]:
        """Names of the backends an atlas has lens vectors for."""
        root = Atlas.open(atlas).derived_path("lens")
        names = []
        for meta in sorted(root.glob("*/meta.json")):
            m = read_json(meta, fix=f"delete {meta.parent} and embed again with unitlens lens embed")
            if m.get("layers"):
                names.append(m["backend"])
        return names

    @classmethod
    def open(cls, atlas: Atlas | str | Path, backend: str | None = None) -> "LensStore":
        """The store for ``backend`` (full name, or a prefix such as ``offline``); when None, the only one, or
        ``DEFAULT_LENS_BACKEND`` when the atlas has several and that is one of them."""
        atlas = atlas if isinstance(atlas, Atlas) else Atlas(atlas)
        have = cls.backends(atlas)
        if not have:
            raise NotEmbedded(f"atlas {atlas.path} has not been embedded yet; run unitlens lens embed {atlas.path}")
        if backend is None:
            if len(have) > 1 and DEFAULT_LENS_BACKEND not in have:
                raise LensError(f"atlas {atlas.path} is embedded with several backends ({', '.join(have)}); "
                                "choose one with --backend")
            return cls(atlas, DEFAULT_LENS_BACKEND if DEFAULT_LENS_BACKEND in have else have[0])
        if backend in have:
            return cls(atlas, backend)
        matches = [b for b in have if b.split("+")[0].startswith(backend + ":") or b.split("+")[0] == backend
                   or backend_dirname(b) == backend]
        if len(matches) == 1:
            return cls(atlas, matches[0])
        raise LensError(f"atlas {atlas.path} has no lens vectors of backend '{backend}'"
                        + (f" (ambiguous: {', '.join(matches)})" if matches else f"; it has {', '.join(have)}"))

    @property
    def weights_id(self) -> str:
        """The digest of the backend weights the vectors come from ("" where the name alone pins them)."""
        return self.meta.get("weights", "")

    def check_weights(self, backend) -> None:
        """Refuse to compare the stored vectors with a backend of the same name but other weights."""
        if backend.weights_id != self.weights_id:
            raise LensError(f"the lens vectors of {self.atlas.path} were embedded with other weights of backend "
                            f"'{self.backend}' ({self.weights_id or 'unrecorded'}, loaded now: "
                            f"{backend.weights_id or 'none'}); embed again: unitlens lens embed {self.atlas.path} "
                            f"--backend {self.backend}")

    def reset(self, weights_id: str) -> None:
        """Forget every layer (vectors of other weights): files, vector tables, null, measures, and the labels made
        in this backend's space."""
        import shutil

        for path in (self.path / "layers", self.path / "vectors.lancedb"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.path.glob("*.parquet"):
            path.unlink()
        (self.path / "null_image.safetensors").unlink(missing_ok=True)
        LabelStore(self.atlas).drop(backend=self.backend)
        self._cache.clear()
        self.meta = {"backend": self.backend, "dim": self.meta.get("dim"), "weights": weights_id,
                     "format": FORMAT, "layers": {}, "atlas": self.atlas.identity()}
        if self.path.is_dir():
            write_json(self.path / "meta.json", self.meta)

    # ------------------------------------------------------------------ layers
    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def layers(self) -> list[str]:
        """Embedded layers, in atlas order."""
        done = self.meta.get("layers", {})
        return [info.name for info in self.atlas.layers if info.name in done]

    def layer_meta(self, layer: str) -> dict:
        return self.meta["layers"][layer]

    def resolve(self, layers=None) -> list[str]:
        """Embedded layer names for ``layers`` (names/globs/None); unknown or not-embedded layers are errors."""

        wanted = [info.name for info in self.atlas.select_layers(layers)]
        missing = [n for n in wanted if n not in self.meta.get("layers", {})]
        if layers is None:
            wanted = [n for n in wanted if n not in missing]
            if not wanted:
                raise NotEmbedded(f"no layer of {self.atlas.path} is embedded with backend '{self.backend}'")
            return wanted
        if missing:
            raise NotEmbedded(f"layer(s) {', '.join(missing)} of {self.atlas.path} are not embedded with backend "
                            f"'{self.backend}'; run unitlens lens embed {self.atlas.path} --layers "
                            f"{','.join(missing)}  (embedded: {', '.join(self.layers) or 'none'})")
        return wanted

    def _layer_file(self, layer: str) -> Path:
        return self.path / "layers" / f"{_table_name(layer)}.safetensors"

    def read_layer(self, layer: str) -> LayerLens:
        if layer not in self.meta.get("layers", {}):
            self.resolve([layer])  # raises the right error
        if layer not in self._cache:
            path = self._layer_file(layer)
            fix = self.atlas.redo(path)  # that layer embedded again, not the whole store
            t = read_tensors(path, fix=fix)
            try:
                self._cache[layer] = LayerLens(layer=layer, **t)
            except TypeError as err:
                raise CorruptFile(f"{path} does not hold a lens layer ({err}); {fix}") from err
        return self._cache[layer]

    def write_layer(self, data: LayerLens, info: dict) -> None:
        """Write one layer's file and vector table, then the metadata that lists it."""
        write_tensors(self._layer_file(data.layer), data.tensors(),
                      metadata={"backend": self.backend, "layer": data.layer})
        self._cache[data.layer] = data
        info = dict(info)
        info["lancedb"] = self._write_lance(data)
        self.meta.setdefault("layers", {})[data.layer] = info
        self.meta["dim"] = int(data.theta.shape[1])
        self.meta["atlas"] = self.atlas.identity()
        self.meta["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(self.path / "meta.json", self.meta)

    def write_options(self, step: str, options: dict) -> None:
        """Keep the options a step (``measures``) ran with in the metadata (the embedding's are kept per layer)."""
        self.meta.setdefault("options", {})[step] = options
        write_json(self.path / "meta.json", self.meta)

    def example_images(self, layer: str, unit: int, n: int, dataset=None) -> tuple[list, list[float]]:
        """A unit's top ``n`` concept examples as PIL images, cropped as the lens embedded them, and their
        activations (``dataset``: the atlas's, opened when not given)."""
        data = self.read_layer(layer)
        dataset = dataset if dataset is not None else self.atlas.dataset()
        images, values = [], []
        for j in torch.nonzero(data.mask[unit]).flatten()[:n].tolist():
            img = dataset.image(int(data.ids[unit, j]))
            if bool(data.has_box[unit, j]):
                img = img.crop(tuple(int(v) for v in data.boxes[unit, j].tolist()))
            images.append(img)
            values.append(float(data.vals[unit, j]))
        return images, values

    # ------------------------------------------------------------------ the image-probe null
    def null_image(self) -> torch.Tensor | None:
        path = self.path / "null_image.safetensors"
        return read_tensors(path, fix=self.atlas.redo(path))["vector"] if path.is_file() else None

    def write_null_image(self, vector: torch.Tensor, ids: torch.Tensor) -> None:
        write_tensors(self.path / "null_image.safetensors",
                      {"vector": F.normalize(vector.float(), dim=-1), "ids": ids.long()},
                      metadata={"backend": self.backend, "what": "mean normalised embedding of dataset images"})

    # ------------------------------------------------------------------ LanceDB
    def _lance(self):
        import lancedb

        return lancedb.connect(str(self.path / "vectors.lancedb"))

    def _write_lance(self, data: LayerLens) -> bool:
        if not lancedb_available():
            return False
        import numpy as np
        import pyarrow as pa

        vectors = data.vectors.numpy().astype(np.float32)
        U, D = vectors.shape
        table = pa.table({
            "layer": pa.array([data.layer] * U, pa.string()),
            "unit": pa.array(np.arange(U, dtype=np.int32)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), D),
        })
        db = self._lance()
        name = _table_name(data.layer)
        if name in _list_tables(db):
            db.drop_table(name)
        db.create_table(name, table)
        return True

    def has_lance(self, layers: list[str]) -> bool:
        return lancedb_available() and all(self.meta["layers"][n].get("lancedb") for n in layers)

    # ------------------------------------------------------------------ search
    def alignment(self, query: torch.Tensor, layers=None, include_constant: bool = False) -> pd.DataFrame:
        """Exact ⟨θ/‖θ‖, query⟩ for every unit of ``layers``: columns layer, unit, a (unsorted)."""
        frames = []
        q = query.float().reshape(-1)
        for name in self.resolve(layers):
            data = self.read_layer(name)
            a = data.vectors @ q
            keep = torch.ones_like(data.constant) if include_constant else ~data.constant
            units = torch.nonzero(keep).flatten()
            frames.append(pd.DataFrame({"layer": name, "unit": units.numpy(), "a": a[units].double().numpy()}))
        return pd.concat(frames, ignore_index=True)

    def search(self, query: torch.Tensor, layers=None, top: int = 10, engine: str = "auto",
               include_constant: bool = False) -> pd.DataFrame:
        """The ``top`` units with the largest ⟨θ/‖θ‖, query⟩ over ``layers``: columns layer, unit, a (descending).

        ``engine``: ``exact`` (in memory), ``lancedb`` (flat scan of the vector table), ``auto`` (LanceDB when
        every layer has a table). Ties are broken by layer order, then unit, in both engines.
        """
        if engine not in ENGINES:
            raise BadInput(f"engine must be one of {ENGINES}")
        names = self.resolve(layers)
        if engine == "auto":
            engine = "lancedb" if self.has_lance(names) else "exact"
        if engine == "lancedb":
            if not lancedb_available():
                raise LensError("the lancedb engine needs the lancedb package: pip install lancedb")
            if not self.has_lance(names):
                raise LensError(f"layers of {self.atlas.path} were embedded without LanceDB tables; run unitlens "
                                "lens embed again with lancedb installed, or use the exact engine")
            frame = self._search_lance(query, names, top, include_constant)
        else:
            frame = self.alignment(query, names, include_constant)
        order = {n: i for i, n in enumerate(names)}
        frame = frame.assign(_order=frame["layer"].map(order))
        frame = frame.sort_values(["a", "_order", "unit"], ascending=[False, True, True], kind="stable")
        return frame.drop(columns="_order").head(top).reset_index(drop=True)

    def _search_lance(self, query: torch.Tensor, names: list[str], top: int, include_constant: bool) -> pd.DataFrame:
        import numpy as np

        db = self._lance()
        q = query.float().reshape(-1).numpy().astype(np.float32)
        frames = []
        for name in names:
            data = self.read_layer(name)
            n_const = 0 if include_constant else int(data.constant.sum())
            limit = min(top + n_const, data.theta.shape[0])
            hits = db.open_table(_table_name(name)).search(q).distance_type("dot").limit(limit).to_pandas()
            units = hits["unit"].to_numpy().astype(np.int64)
            a = 1.0 - hits["_distance"].to_numpy().astype(np.float64)  # LanceDB's dot distance is 1 - <x, q>
            frame = pd.DataFrame({"layer": name, "unit": units, "a": a})
            if not include_constant:
                frame = frame[~data.constant.numpy()[units]]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    # ------------------------------------------------------------------ derived tables
    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.path / name
        write_parquet(path, frame)
        return path

    def read_table(self, name: str) -> pd.DataFrame | None:
        """A table ``write_table`` wrote (None if there is none); a damaged one is a ``CorruptFile``."""
        path = self.path / name
        return read_parquet(path, fix=self.atlas.redo(path)) if path.is_file() else None


def _list_tables(db) -> list[str]:
    if hasattr(db, "list_tables"):
        out = db.list_tables()
        names = getattr(out, "tables", out)
        return list(names)
    return list(db.table_names())
