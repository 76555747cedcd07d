"""Embedding cache: every (image content, crop box) is embedded once per backend and kept in the atlas.

Layout, under ``Atlas.backend_path("embeddings", backend)``::

    meta.json                   backend name, embedding width, weights_id (checked on open; other weights: dropped),
                                format
    shard-<n>-<tag>.safetensors embeddings (n, D) float32 with their own keys: ids (n,), boxes (n, 4), has_box (n,),
                                and the sample keys (metadata ``keys``, JSON)
    index.parquet               key, id, x0, y0, x1, y1 (null: whole image), shard, row: one row per cached key

Keys are the content: a sample's key is the hash of its file's bytes from the atlas's samples table
(``content_hash``), so an image replaced by another (even of the same size) is embedded again after ``record
--force``, identical images at other ids or in a re-recorded dataset reuse their embedding, and a cache copied from
another atlas can only serve embeddings of the same bytes. Before embedding, the file's bytes are hashed again and
must still match; an image edited after recording is an error, never cached under the old key. Atlases without
content hashes (recorded before them, or with ``--no-content-hash``) key samples by dataset fingerprint and id.

Shards are append-only and written atomically before the index, and each shard carries its own keys, so a
process that stops between two writes loses nothing: opening the cache re-indexes any shard the index does not
list yet. A damaged shard, index or meta file is dropped with a warning and its embeddings are made again. On a
read-only atlas new embeddings are kept in memory for the run (with a warning). Crop boxes are ``(x0, y0, x1,
y1)`` in pixels of the original image (PIL's ``crop``), rounded to integers. ``StoredEmbeddings(atlas, backend_name)``
reads a cache without a backend and without writing (the explorer shows MIS tasks from it).
"""
from __future__ import annotations

import io
import json
import uuid
import warnings
from collections.abc import Iterable, Sequence

import pandas as pd
import torch
from PIL import Image

from unitlens.atlas import Atlas
from unitlens.atlas.files import (
    read_json,
    read_parquet,
    read_tensor_metadata,
    read_tensors,
    write_json,
    write_parquet,
    write_tensors,
)
from unitlens.atlas.lock import check_writable
from unitlens.backends.base import Backend
from unitlens.data.hashing import digest
from unitlens.data.images import open_rgb
from unitlens.errors import AtlasError, BadInput, CorruptFile, NotComputed, UnitlensError
from unitlens.runtime import Progress, prefetch

Box = tuple[int, int, int, int]
Key = tuple[str, Box | None]  # (sample key: content hash, or "<fingerprint>#<id>" without one; crop box)
FORMAT = 2  # 1: keyed by sample id (migrated on open where the atlas has no content hashes, else dropped)
REDONE = "the shard is deleted and its embeddings are made again"
REBUILT = "the index is rebuilt from the shards"


def _box(crop) -> Box | None:
    if crop is None:
        return None
    box = tuple(int(round(float(v))) for v in crop)
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise BadInput(f"a crop box is (x0, y0, x1, y1) with x1 > x0 and y1 > y0 in image pixels; got {crop}")
    return box


class NotEmbeddable(BadInput, TypeError):
    """A pairwise-only backend was given where embeddings are needed."""


def require_embeddings(backend: Backend, use: str = "this step") -> None:
    """Refuse a pairwise-only backend where embeddings are needed, naming the backends that have them."""
    if not backend.embeds:
        raise NotEmbeddable(
            f"backend '{backend.name}' compares image pairs and has no embeddings, which {use} needs; use an "
            "embedding backend: offline, offline-vl, dreamsim, openclip:..., hf:... or timm:... (MIS scores with "
            f"pairwise backends too: unitlens mis ATLAS --backend {backend.name})"
        )


def _encode(backend: Backend, tensors: list[torch.Tensor]) -> torch.Tensor:
    out = backend.encode_images(torch.stack(tensors))
    if out.ndim != 2 or out.shape[0] != len(tensors):
        raise UnitlensError(f"backend '{backend.name}' returned shape {tuple(out.shape)} for {len(tensors)} images")
    return out.float().cpu()


def embed_images(backend: Backend, images: Sequence[Image.Image], batch_size: int = 64,
                 progress: bool = False) -> torch.Tensor:
    """Embed PIL images that are not dataset samples (feature visualisations, probes): (n, D), not cached."""
    require_embeddings(backend, "embedding images")
    images = list(images)
    if not images:
        return torch.empty(0, backend.dim)
    out = []
    with Progress(f"embed {backend.name}", len(images), progress, unit="img") as bar:
        for chunk, tensors in prefetch(images, lambda im: backend.preprocess(im.convert("RGB")), batch_size):
            out.append(_encode(backend, tensors))
            bar.advance(len(chunk))
    return torch.cat(out)


def sample_keys(atlas: Atlas) -> list[str]:
    """The cache key of every sample id of an atlas: its content hash, else ``<dataset fingerprint>#<id>``."""
    samples = atlas.samples()
    fingerprint = atlas.manifest.config.dataset_fingerprint
    hashes = samples["content_hash"].tolist() if "content_hash" in samples else [None] * len(samples)
    return [h if isinstance(h, str) else f"{fingerprint}#{int(i)}" for i, h in zip(samples["id"].tolist(), hashes)]


def read_index(index: pd.DataFrame, keys: list[str], legacy: bool
               ) -> tuple[dict[Key, tuple[str, int]], dict[Key, int]]:
    """An ``index.parquet`` as (key, box) -> (shard, row) and (key, box) -> the first sample id seen with it;
    ``legacy`` indexes (format 1) list sample ids only, which ``keys`` (``sample_keys``) turns into keys."""
    boxes = index[["x0", "y0", "x1", "y1"]]
    has_box = boxes.notna().all(axis=1).tolist()
    box_rows = boxes.fillna(0).astype("int64").itertuples(index=False, name=None)
    ids = index["id"].tolist()
    names = [keys[int(i)] for i in ids] if legacy else index["key"].tolist()
    where: dict[Key, tuple[str, int]] = {}
    first: dict[Key, int] = {}
    for name, i, hb, box, shard, row in zip(names, ids, has_box, box_rows, index["shard"].tolist(),
                                            index["row"].tolist()):
        key = (str(name), tuple(box) if hb else None)
        where[key] = (shard, int(row))
        first.setdefault(key, int(i))
    return where, first


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
        self.keys = sample_keys(self.atlas)
        self._where: dict[Key, tuple[str, int]] = {}
        index_path, meta_path = self.path / "index.parquet", self.path / "meta.json"
        if index_path.is_file() and meta_path.is_file():
            legacy = read_json(meta_path, fix=REBUILT).get("format", 1) < FORMAT
            self._where = read_index(read_parquet(index_path, fix=REBUILT), self.keys, legacy)[0]
        self._loaded: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._where)

    def get(self, ids: Iterable[int] | torch.Tensor) -> torch.Tensor:
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        missing = [i for i in ids if (self.keys[i], None) not in self._where]
        if missing:
            raise NotComputed(f"{len(missing)} samples (e.g. {missing[:5]}) of atlas {self.atlas.path} have no cached "
                              f"'{self.backend}' embedding; run unitlens mis {self.atlas.path} --backend "
                              f"{self.backend} to embed them")
        rows = [self._where[(self.keys[i], None)] for i in ids]
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
        require_embeddings(backend, "the embedding cache")
        self.atlas = Atlas.open(atlas)
        self.backend = backend
        self.shard_rows = int(shard_rows)
        self.path = self.atlas.backend_path("embeddings", backend.name)
        self.hits = 0
        self.misses = 0
        self.persist = True
        self._dataset = None
        self._keys: list[str] | None = None
        self._hashed = False
        self._where: dict[Key, tuple[str, int]] = {}
        self._first_id: dict[Key, int] = {}
        self._loaded: dict[str, torch.Tensor] = {}
        self._open()

    # ------------------------------------------------------------------ sample keys
    @property
    def sample_keys(self) -> list[str]:
        """The cache key of every sample id: its content hash, else ``<dataset fingerprint>#<id>``."""
        if self._keys is None:
            self._read_samples()
        return self._keys or []

    def _read_samples(self) -> None:
        self._keys = sample_keys(self.atlas)
        self._hashed = "content_hash" in self.atlas.samples()

    def _key(self, sample_id: int, crop) -> Key:
        keys = self.sample_keys
        if not 0 <= sample_id < len(keys):
            raise BadInput(f"sample id {sample_id} is not in atlas {self.atlas.path} ({len(keys)} samples)")
        return keys[sample_id], _box(crop)

    # ------------------------------------------------------------------ opening and writing
    def _warn(self, message: str) -> None:
        warnings.warn(f"embedding cache {self.path}: {message}", stacklevel=4)

    def _drop_files(self, names: Iterable[str]) -> None:
        if self.persist:
            for name in names:
                (self.path / name).unlink(missing_ok=True)

    def _reset(self) -> None:
        self._drop_files([p.name for p in self.path.glob("shard-*.safetensors")] + ["index.parquet"])
        self._where.clear()
        if self.persist:
            write_json(self.path / "meta.json", {"backend": self.backend.name, "dim": self.backend.dim,
                                                 "weights": self.backend.weights_id, "format": FORMAT})

    def _open(self) -> None:
        try:
            check_writable(self.path)
            self.path.mkdir(parents=True, exist_ok=True)
        except (BadInput, OSError):
            self.persist = False
            self._warn(f"atlas {self.atlas.path} is read-only: new embeddings are kept in memory for this run only")
        meta_path = self.path / "meta.json"
        meta = None
        if meta_path.is_file():
            try:
                meta = read_json(meta_path, fix="its embeddings are dropped and made again")
            except CorruptFile as err:
                self._warn(str(err))
        if meta is not None:
            if meta.get("backend") != self.backend.name:
                raise BadInput(f"{self.path} caches backend '{meta.get('backend')}', not '{self.backend.name}'")
            if meta.get("dim") not in (None, self.backend.dim):
                raise BadInput(f"{self.path} holds {meta['dim']}-d embeddings but '{self.backend.name}' gives "
                                 f"{self.backend.dim}-d; delete the folder to re-embed")
        self._read_samples()
        if meta is None or meta.get("weights", "") != self.backend.weights_id or \
                (meta.get("format", 1) < FORMAT and self._hashed):
            self._reset()  # other weights under the same name, or id keys that the content keys replace
            return
        index_path = self.path / "index.parquet"
        if index_path.is_file():
            try:
                self._read_index(read_parquet(index_path, fix=REBUILT), legacy=meta.get("format", 1) < FORMAT)
            except (CorruptFile, KeyError, IndexError, ValueError) as err:
                self._warn(f"its index is damaged ({err}); {REBUILT}")
                self._where.clear()
        listed = {shard for shard, _ in self._where.values()}
        on_disk = {p.name for p in self.path.glob("shard-*.safetensors")}
        lost = listed - on_disk
        if lost:  # an index that names deleted shards: forget those keys, they will be embedded again
            self._where = {k: v for k, v in self._where.items() if v[0] not in lost}
        changed = bool(lost) or meta.get("format", 1) < FORMAT
        for name in sorted(on_disk - listed):  # written, but the process stopped before the index was
            try:
                self._add_keys(name, read_tensors(self.path / name, fix=REDONE),
                               read_tensor_metadata(self.path / name, fix=REDONE))
            except (CorruptFile, KeyError, IndexError, ValueError) as err:
                self._warn(str(err) if isinstance(err, CorruptFile) else f"shard {name} is malformed ({err}); {REDONE}")
                self._drop_files([name])
            changed = True
        if changed and self.persist:
            self._write_index()
            write_json(meta_path, {**meta, "format": FORMAT})

    def _read_index(self, index: pd.DataFrame, legacy: bool) -> None:
        where, first = read_index(index, self.sample_keys, legacy)
        self._where.update(where)
        for key, i in first.items():
            self._first_id.setdefault(key, i)

    def _add_keys(self, shard: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        ids, boxes, has_box = tensors["ids"].tolist(), tensors["boxes"].tolist(), tensors["has_box"].tolist()
        keys = json.loads(metadata["keys"]) if "keys" in metadata else [self.sample_keys[int(i)] for i in ids]
        for row, (key, i, box, hb) in enumerate(zip(keys, ids, boxes, has_box)):
            key_box = (int(box[0]), int(box[1]), int(box[2]), int(box[3])) if hb else None
            self._where.setdefault((str(key), key_box), (shard, row))
            self._first_id.setdefault((str(key), key_box), int(i))

    def _write_index(self) -> None:
        keys = list(self._where)
        boxes = [k[1] for k in keys]
        table = pd.DataFrame({
            "key": pd.Series([k[0] for k in keys], dtype="string"),
            "id": pd.Series([self._first_id.get(k, -1) for k in keys], dtype="int64"),
            **{c: pd.Series([b[j] if b is not None else None for b in boxes], dtype="Int64")
               for j, c in enumerate(("x0", "y0", "x1", "y1"))},
            "shard": pd.Series([self._where[k][0] for k in keys], dtype="string"),
            "row": pd.Series([self._where[k][1] for k in keys], dtype="int32"),
        })
        write_parquet(self.path / "index.parquet", table)

    def _flush(self, keys: list[Key], vectors: list[torch.Tensor]) -> None:
        """Write one shard (atomically), then the index that lists it (in memory only on a read-only atlas)."""
        if not keys:
            return
        n_shards = len(list(self.path.glob("shard-*.safetensors"))) if self.persist else len(self._loaded)
        name = f"shard-{n_shards:06d}-{uuid.uuid4().hex[:8]}.safetensors"
        tensors = {
            "embeddings": torch.cat(vectors).contiguous(),
            "ids": torch.tensor([self._first_id[k] for k in keys], dtype=torch.int64),
            "boxes": torch.tensor([k[1] if k[1] is not None else (0, 0, 0, 0) for k in keys], dtype=torch.int64),
            "has_box": torch.tensor([k[1] is not None for k in keys], dtype=torch.bool),
        }
        metadata = {"backend": self.backend.name, "keys": json.dumps([k[0] for k in keys])}
        if self.persist:
            write_tensors(self.path / name, tensors, metadata=metadata)
        self._loaded[name] = tensors["embeddings"]
        self._add_keys(name, tensors, metadata)
        if self.persist:
            self._write_index()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key) -> bool:
        sample_id, crop = key if isinstance(key, tuple) else (key, None)
        return self._key(int(sample_id), crop) in self._where

    @property
    def dataset(self):
        if self._dataset is None:
            self._dataset = self.atlas.dataset()
        return self._dataset

    def _image(self, key: Key) -> Image.Image:
        sample_id = self._first_id[key]
        path = self.dataset.path(sample_id)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UnitlensError(f"cannot read sample {sample_id} ({path}): {err}") from err
        if "#" not in key[0] and digest(data) != key[0]:  # a content key: the bytes must still be those recorded
            raise AtlasError(f"image {path} (sample {sample_id}) changed since atlas {self.atlas.path} was recorded "
                             "(its bytes no longer match the recorded content hash); restore it, or record the "
                             "atlas again with unitlens record ... --force so its exemplars match the new images")
        try:
            image = open_rgb(io.BytesIO(data))
        except Exception as err:
            raise UnitlensError(f"cannot read sample {sample_id} ({path}): {err}") from err
        box = key[1]
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

    def _shard(self, name: str) -> torch.Tensor | None:
        """A shard's embeddings; a damaged shard is deleted, its keys forgotten (embedded again), and None returned."""
        if name not in self._loaded:
            try:
                self._loaded[name] = read_tensors(self.path / name, fix=REDONE)["embeddings"]
            except (CorruptFile, KeyError) as err:
                self._warn(str(err) if isinstance(err, CorruptFile) else f"shard {name} is malformed ({err}); {REDONE}")
                self._drop_files([name])
                self._where = {k: v for k, v in self._where.items() if v[0] != name}
                if self.persist:
                    self._write_index()
                return None
        return self._loaded[name]

    def get(self, ids: Iterable[int] | torch.Tensor, crops: Sequence | None = None, batch_size: int = 64,
            progress: bool = True) -> torch.Tensor:
        """Embeddings (n, D) of samples ``ids``, each cropped to ``crops[i]`` (a box, or None for the whole image)."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        crops = [None] * len(ids) if crops is None else list(crops)
        if len(crops) != len(ids):
            raise BadInput(f"got {len(ids)} ids but {len(crops)} crops")
        keys = [self._key(i, c) for i, c in zip(ids, crops)]
        for name in {self._where[k][0] for k in keys if k in self._where}:
            self._shard(name)  # read (and check) every shard this request needs before deciding what is missing
        for i, key in zip(ids, keys):
            self._first_id.setdefault(key, i)
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
            vectors = self._shard(shard)
            if vectors is None:
                raise CorruptFile(f"the embedding shard {self.path / shard} written in this run cannot be read back; "
                                  "check the disk, then run the command again")
            out[torch.tensor(positions)] = vectors[torch.tensor(rows)]
        return out
