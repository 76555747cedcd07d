"""Embedding cache: every (sample id, crop box) is embedded once per backend and kept in the atlas.

Layout, under ``Atlas.backend_path("embeddings", backend)``::

    meta.json                   backend name, embedding width, weights_id (checked on open; other weights: dropped)
    shard-<n>-<tag>.safetensors embeddings (n, D) float32 with their own keys: ids (n,), boxes (n, 4), has_box (n,)
    index.parquet               id, x0, y0, x1, y1 (null: whole image), shard, row: one row per cached key

Shards are append-only and written atomically before the index, and each shard carries its own keys, so a
process that stops between two writes loses nothing: opening the cache re-indexes any shard the index
does not list yet. Crop boxes are ``(x0, y0, x1, y1)`` in pixels of the original image (PIL's ``crop``),
rounded to integers. ``StoredEmbeddings(atlas, backend_name)`` reads a cache without a backend and without
writing (the explorer shows MIS tasks from it).
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from unitlens.atlas import Atlas
from unitlens.atlas.files import (
    read_json,
    read_tensors,
    write_json,
    write_parquet,
    write_tensors,
)
from unitlens.backends.base import Backend
from unitlens.errors import BadInput, NotComputed, UnitlensError
from unitlens.runtime import Progress, prefetch

Box = tuple[int, int, int, int]
Key = tuple[int, Box | None]
FORMAT = 1


def _box(crop) -> Box | None:
    if crop is None:
        return None
    box = tuple(int(round(float(v))) for v in crop)
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise BadInput(f"a crop box is (x0, y0, x1, y1) with x1 > x0 and y1 > y0 in image pixels; got {crop}")
    return box


class NotEmbeddable(BadInput, TypeError):
    """A pairwise-only backend was given where embeddings are needed."""


def _require_embeddings(backend: Backend) -> None:
    if not backend.embeds:
        raise NotEmbeddable(
            f"backend '{backend.name}' compares image pairs and has no embeddings to cache; use its "
            "similarity(a, b), or an embedding backend (dreamsim, openclip:..., hf:..., timm:..., offline)"
        )


def _encode(backend: Backend, tensors: list[torch.Tensor]) -> torch.Tensor:
    out = backend.encode_images(torch.stack(tensors))
    if out.ndim != 2 or out.shape[0] != len(tensors):
        raise UnitlensError(f"backend '{backend.name}' returned shape {tuple(out.shape)} for {len(tensors)} images")
    return out.float().cpu()


def embed_images(backend: Backend, images: Sequence[Image.Image], batch_size: int = 64,
                 progress: bool = False) -> torch.Tensor:
    """Embed PIL images that are not dataset samples (feature visualisations, probes): (n, D), not cached."""
    _require_embeddings(backend)
    images = list(images)
    if not images:
        return torch.empty(0, backend.dim)
    out = []
    with Progress(f"embed {backend.name}", len(images), progress, unit="img") as bar:
        for chunk, tensors in prefetch(images, lambda im: backend.preprocess(im.convert("RGB")), batch_size):
            out.append(_encode(backend, tensors))
            bar.advance(len(chunk))
    return torch.cat(out)


def read_index(path) -> dict[Key, tuple[str, int]]:
    """The keys an embedding cache folder lists in its ``index.parquet`` -> (shard, row); {} without an index."""
    index_path = Path(path) / "index.parquet"
    if not index_path.is_file():
        return {}
    index = pd.read_parquet(index_path)
    boxes = index[["x0", "y0", "x1", "y1"]]
    has_box = boxes.notna().all(axis=1).tolist()
    box_rows = boxes.fillna(0).astype("int64").itertuples(index=False, name=None)
    return {(int(i), tuple(box) if hb else None): (shard, int(row))
            for i, hb, box, shard, row in zip(index["id"].tolist(), has_box, box_rows, index["shard"].tolist(),
                                               index["row"].tolist())}


class StoredEmbeddings:
    """Read-only access to the embeddings an atlas caches for a backend, by the backend's name: it loads no model,
    embeds nothing and writes nothing (``EmbeddingCache`` creates its folder and embeds what is missing).

    ``get(ids)`` returns the whole-image embeddings (n, D) of samples ``ids``, or raises ``NotComputed`` naming
    the samples that are not cached.
    """

    def __init__(self, atlas, backend_name: str):
        self.atlas = Atlas.open(atlas)
        self.backend = backend_name
        self.path = self.atlas.backend_path("embeddings", backend_name)
        self._where = read_index(self.path)
        self._loaded: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._where)

    def get(self, ids: Iterable[int] | torch.Tensor) -> torch.Tensor:
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        missing = [i for i in ids if (i, None) not in self._where]
        if missing:
            raise NotComputed(f"{len(missing)} samples (e.g. {missing[:5]}) of atlas {self.atlas.path} have no cached "
                              f"'{self.backend}' embedding; run unitlens mis {self.atlas.path} --backend "
                              f"{self.backend} to embed them")
        rows = [self._where[(i, None)] for i in ids]
        out = torch.empty(len(ids), 0)
        for shard in dict.fromkeys(s for s, _ in rows):
            if shard not in self._loaded:
                self._loaded[shard] = read_tensors(self.path / shard)["embeddings"]
            table = self._loaded[shard]
            if out.shape[1] == 0:
                out = torch.empty(len(ids), table.shape[1], dtype=table.dtype)
            pos = [k for k, (s, _) in enumerate(rows) if s == shard]
            out[torch.tensor(pos)] = table[torch.tensor([rows[k][1] for k in pos])]
        return out


class EmbeddingCache:
    """Embeddings of an atlas's samples (whole or cropped) for one backend, computed once and kept on disk.

    ``get(ids, crops)`` returns an (n, D) tensor in the order asked, embedding only what is not cached yet;
    ``hits`` counts requested rows served from the cache, ``misses`` the keys that had to be embedded.
    """

    def __init__(self, atlas, backend: Backend, shard_rows: int = 4096):
        _require_embeddings(backend)
        self.atlas = Atlas.open(atlas)
        self.backend = backend
        self.shard_rows = int(shard_rows)
        self.path = self.atlas.backend_path("embeddings", backend.name)
        self.hits = 0
        self.misses = 0
        self._dataset = None
        self._where: dict[Key, tuple[str, int]] = {}
        self._loaded: dict[str, torch.Tensor] = {}
        self._open()

    # ------------------------------------------------------------------ opening and writing
    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / "meta.json"
        meta = read_json(meta_path) if meta_path.is_file() else None
        if meta is not None:
            if meta.get("backend") != self.backend.name:
                raise BadInput(f"{self.path} caches backend '{meta.get('backend')}', not '{self.backend.name}'")
            if meta.get("dim") not in (None, self.backend.dim):
                raise BadInput(f"{self.path} holds {meta['dim']}-d embeddings but '{self.backend.name}' gives "
                                 f"{self.backend.dim}-d; delete the folder to re-embed")
        if meta is None or meta.get("weights", "") != self.backend.weights_id:
            for stale in [*self.path.glob("shard-*.safetensors"), self.path / "index.parquet"]:
                stale.unlink(missing_ok=True)  # embeddings of other weights under the same name: wrong now
            write_json(meta_path, {"backend": self.backend.name, "dim": self.backend.dim,
                                   "weights": self.backend.weights_id, "format": FORMAT})
        self._where.update(read_index(self.path))
        listed = {shard for shard, _ in self._where.values()}
        on_disk = {p.name for p in self.path.glob("shard-*.safetensors")}
        lost = listed - on_disk
        if lost:  # an index that names deleted shards: forget those keys, they will be embedded again
            self._where = {k: v for k, v in self._where.items() if v[0] not in lost}
        recovered = False
        for name in sorted(on_disk - listed):  # written, but the process stopped before the index was
            self._add_keys(name, read_tensors(self.path / name))
            recovered = True
        if recovered or lost:
            self._write_index()

    def _add_keys(self, shard: str, tensors: dict[str, torch.Tensor]) -> None:
        ids, boxes, has_box = tensors["ids"].tolist(), tensors["boxes"].tolist(), tensors["has_box"].tolist()
        for row, (i, box, hb) in enumerate(zip(ids, boxes, has_box)):
            key_box = (int(box[0]), int(box[1]), int(box[2]), int(box[3])) if hb else None
            self._where.setdefault((int(i), key_box), (shard, row))

    def _write_index(self) -> None:
        keys = list(self._where)
        boxes = [k[1] for k in keys]
        table = pd.DataFrame({
            "id": pd.Series([k[0] for k in keys], dtype="int64"),
            **{c: pd.Series([b[j] if b is not None else None for b in boxes], dtype="Int64")
               for j, c in enumerate(("x0", "y0", "x1", "y1"))},
            "shard": pd.Series([self._where[k][0] for k in keys], dtype="string"),
            "row": pd.Series([self._where[k][1] for k in keys], dtype="int32"),
        })
        write_parquet(self.path / "index.parquet", table)

    def _flush(self, keys: list[Key], vectors: list[torch.Tensor]) -> None:
        """Write one shard (atomically), then the index that lists it."""
        if not keys:
            return
        n_shards = len(list(self.path.glob("shard-*.safetensors")))
        name = f"shard-{n_shards:06d}-{uuid.uuid4().hex[:8]}.safetensors"
        tensors = {
            "embeddings": torch.cat(vectors).contiguous(),
            "ids": torch.tensor([k[0] for k in keys], dtype=torch.int64),
            "boxes": torch.tensor([k[1] if k[1] is not None else (0, 0, 0, 0) for k in keys], dtype=torch.int64),
            "has_box": torch.tensor([k[1] is not None for k in keys], dtype=torch.bool),
        }
        write_tensors(self.path / name, tensors, metadata={"backend": self.backend.name})
        self._loaded[name] = tensors["embeddings"]
        self._add_keys(name, tensors)
        self._write_index()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key) -> bool:
        sample_id, crop = key if isinstance(key, tuple) else (key, None)
        return (int(sample_id), _box(crop)) in self._where

    @property
    def dataset(self):
        if self._dataset is None:
            self._dataset = self.atlas.dataset()
        return self._dataset

    def _image(self, key: Key) -> Image.Image:
        sample_id, box = key
        try:
            image = self.dataset.image(sample_id)
        except Exception as err:
            raise UnitlensError(f"cannot read sample {sample_id} ({self.dataset.path(sample_id)}): {err}") from err
        return image.crop(box) if box is not None else image

    def _embed(self, keys: list[Key], batch_size: int, progress: bool) -> None:
        pending_keys: list[Key] = []
        pending: list[torch.Tensor] = []
        with Progress(f"embed {self.backend.name}", len(keys), progress, unit="img") as bar:
            for chunk, tensors in prefetch(keys, lambda k: self.backend.preprocess(self._image(k)), batch_size):
                pending.append(_encode(self.backend, tensors))
                pending_keys.extend(chunk)
                bar.advance(len(chunk))
                if len(pending_keys) >= self.shard_rows:
                    self._flush(pending_keys, pending)
                    pending_keys, pending = [], []
            self._flush(pending_keys, pending)

    def _shard(self, name: str) -> torch.Tensor:
        if name not in self._loaded:
            self._loaded[name] = read_tensors(self.path / name)["embeddings"]
        return self._loaded[name]

    def get(self, ids: Iterable[int] | torch.Tensor, crops: Sequence | None = None, batch_size: int = 64,
            progress: bool = True) -> torch.Tensor:
        """Embeddings (n, D) of samples ``ids``, each cropped to ``crops[i]`` (a box, or None for the whole image)."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        crops = [None] * len(ids) if crops is None else list(crops)
        if len(crops) != len(ids):
            raise BadInput(f"got {len(ids)} ids but {len(crops)} crops")
        keys = [(i, _box(c)) for i, c in zip(ids, crops)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._where))
        self.hits += len(keys) - sum(1 for k in keys if k not in self._where)
        self.misses += len(missing)
        if missing:
            self._embed(missing, batch_size, progress)
        out = torch.empty(len(keys), self.backend.dim, dtype=torch.float32)
        by_shard: dict[str, tuple[list[int], list[int]]] = {}
        for pos, key in enumerate(keys):
            shard, row = self._where[key]
            positions, rows = by_shard.setdefault(shard, ([], []))
            positions.append(pos)
            rows.append(row)
        for shard, (positions, rows) in by_shard.items():
            out[torch.tensor(positions)] = self._shard(shard)[torch.tensor(rows)]
        return out
