"""One embedding cache per study and set of images, shared by the entries' own caches.

Every atlas caches the embeddings of its images per backend (``unitlens.backends.cache``: append-only shard files,
each carrying its own keys, plus an index). In a study many entries record the same images, so without sharing each
entry embeds them again. The study keeps a pool of shards per (images, backend) under
``<study>/embeddings/<images>/<backend>/``; before a step embeds, the pool's shards are linked into the entry's own
cache folder (hard links where the file system allows, else copies), and afterwards the shards the step added are
linked back into the pool. Opening the entry's cache indexes the linked shards (it re-indexes shards its index does
not list, the same path that recovers a stopped write), so nothing in the cache itself changes.

Every atlas stays self-contained: its cache holds real files (a hard link is a full name of the same file, and
shards are never modified after they are written), so deleting the pool or moving an atlas out of the study loses
nothing. ``<images>`` is a digest of the dataset fingerprint and the sample paths, so only entries whose sample ids
mean the same images share; a pool of other backend weights (``meta.json``: backend, dimension, weights id) is
replaced, never mixed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from unitlens.atlas import Atlas
from unitlens.atlas.files import read_json, write_json
from unitlens.atlas.layout import backend_dirname

META = "meta.json"
SHARDS = "shard-*.safetensors"


def images_key(atlas: Atlas) -> str:
    """A digest naming the images of an atlas: its dataset fingerprint and every sample's path, in id order."""
    h = hashlib.sha256(atlas.manifest.config.dataset_fingerprint.encode())
    for path in atlas.samples()["path"]:
        h.update(f"\n{path}".encode())
    return h.hexdigest()[:16]


def pool_path(root: str | Path, atlas: Atlas, backend_name: str) -> Path:
    """The shared folder of ``backend_name``'s embeddings of this atlas's images under the study's ``root``."""
    return Path(root) / images_key(atlas) / backend_dirname(backend_name)


def _same_weights(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("backend", "dim", "weights"))


def _link(src: Path, dst: Path) -> bool:
    """Link (else copy) ``src`` to ``dst`` unless it exists; True if a file was added."""
    if dst.exists():
        return False
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    except OSError:  # another file system, or links not allowed: a copy, written under a temporary name
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    return True


def seed_cache(pool: Path, cache: Path) -> int:
    """Link the pool's shards into an atlas's cache folder ``cache``; returns how many were added.

    A cache with no ``meta.json`` takes the pool's; a cache of other weights is left alone (its own cache drops
    stale shards when opened, and the shards of the pool would be stale for it)."""
    pool_meta = pool / META
    if not pool_meta.is_file():
        return 0
    meta = read_json(pool_meta)
    cache.mkdir(parents=True, exist_ok=True)
    own = cache / META
    if own.is_file():
        if not _same_weights(read_json(own), meta):
            return 0
    else:
        write_json(own, meta)
    return sum(_link(shard, cache / shard.name) for shard in sorted(pool.glob(SHARDS)))


def publish_cache(cache: Path, pool: Path) -> int:
    """Link the shards of an atlas's cache that the pool lacks into the pool; returns how many were added.

    A pool of other weights than the cache's is emptied first (the backend was retrained under its name)."""
    own = cache / META
    if not own.is_file():
        return 0
    meta = read_json(own)
    pool.mkdir(parents=True, exist_ok=True)
    pool_meta = pool / META
    if pool_meta.is_file() and not _same_weights(read_json(pool_meta), meta):
        for stale in pool.glob(SHARDS):
            stale.unlink(missing_ok=True)
        pool_meta.unlink()
    if not pool_meta.is_file():
        write_json(pool_meta, meta)
    return sum(_link(shard, pool / shard.name) for shard in sorted(cache.glob(SHARDS)))
