"""Content hashes of image files: a BLAKE2b-128 digest of each file's bytes, computed in threads, reused while the
file is unchanged.

Why BLAKE2b: it is in the standard library (no dependency, the same digest on every install), fast (hashlib
releases the GIL, so threads hash several files at once; reading the files is usually slower than hashing them),
and collision-resistant, so two different images never share a key even when someone crafts them. xxHash would
be faster per byte but is neither installed here nor collision-resistant.

Reuse: a file whose path, size, modification time and status-change time (both in ns) equal those recorded with
an earlier hash keeps that hash without being read. The status-change time (ctime) cannot be set from user space,
so a same-size replacement that restores the modification time (``cp -p``, ``touch -r``, ``tar -x``) still
changes it and is hashed again; ``chmod`` or a copy to another disk only costs a re-hash.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from unitlens.runtime import Progress

COLUMNS = ("file_bytes", "file_mtime_ns", "file_ctime_ns", "content_hash")
DIGEST_BYTES = 16
CHUNK = 1 << 20
SHOW_PROGRESS_FROM = 2000  # files to hash before a progress bar is worth showing


def digest(data: bytes) -> str:
    """The content hash of ``data`` (hex)."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest()


def file_digest(path: str | Path) -> str:
    """The content hash of the file at ``path`` (hex), read in 1 MiB chunks."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stat(path: str) -> tuple[int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1, -1
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _known(known: pd.DataFrame | None) -> dict[str, tuple]:
    if known is None or not set(COLUMNS) <= set(known.columns) or "path" not in known:
        return {}
    rows = known[["path", *COLUMNS]].dropna(subset=["content_hash"])
    return {p: (int(b), int(m), int(c), h) for p, b, m, c, h in rows.itertuples(index=False, name=None)}


def file_hashes(paths: Sequence[str | Path], known: pd.DataFrame | None = None, progress: bool = False,
                threads: int | None = None) -> tuple[pd.DataFrame, int]:
    """(table with one row per path: file_bytes, file_mtime_ns, file_ctime_ns, content_hash; number of files read).

    ``known``: an earlier table with ``path`` and these columns (an atlas's samples); its hashes are reused for
    unchanged files. A file that cannot be read gets a null hash (and -1 stats); the step that opens it reports it.
    """
    names = [str(p) for p in paths]
    previous = _known(known)
    stats = [_stat(p) for p in names]
    hashes: list[str | None] = [None] * len(names)
    todo = []
    for i, (path, st) in enumerate(zip(names, stats)):
        old = previous.get(path)
        if st[0] < 0:
            continue
        if old is not None and old[:3] == st:
            hashes[i] = old[3]
        else:
            todo.append(i)

    def one(i: int) -> str | None:
        try:
            return file_digest(names[i])
        except OSError:
            return None

    workers = threads or max(1, min(8, 2 * (os.cpu_count() or 1)))
    with Progress("hashing images", len(todo), progress and len(todo) >= SHOW_PROGRESS_FROM, unit="file") as bar, \
            ThreadPoolExecutor(workers) as pool:
        for i, h in zip(todo, pool.map(one, todo, chunksize=64)):
            hashes[i] = h
            bar.advance(1)
    table = pd.DataFrame({
        "file_bytes": pd.Series([s[0] for s in stats], dtype="int64"),
        "file_mtime_ns": pd.Series([s[1] for s in stats], dtype="int64"),
        "file_ctime_ns": pd.Series([s[2] for s in stats], dtype="int64"),
        "content_hash": pd.Series(hashes, dtype="object"),
    })
    return table, len(todo)
