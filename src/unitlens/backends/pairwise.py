"""Similarity matrices of a pairwise backend (LPIPS, DISTS) over an atlas's samples, kept in the atlas.

A pairwise backend has no embedding to cache, so the similarities of n images are computed as one symmetric
(n, n) matrix in row blocks: the features of a block of R images stay in memory while the images after it go
through the network in chunks, so the matrix costs n(n+1)/2 pair comparisons and about n + n²/(2R) network
forwards, where R is what ``memory`` bytes of features hold (default: a quarter of the machine's or the
accelerator's memory; ``PairwiseBackend.features`` take about 25 MB per image for DISTS at 224 px, 2 MB for
LPIPS-alex). An embedding backend needs n forwards and n² dot products.

Layout, under ``Atlas.backend_path("pairwise", backend)``::

    <key>/meta.json                   backend, weights, settings, n, rows per block
    <key>/rows-<start>.safetensors    ``similarity`` (R, n − start): rows start..start+R, columns start..n−1

``<key>`` digests the backend's name, weights and settings and the ordered content keys of the n images, so the
same images (another τ, a rescore) read the matrix back, a stopped run resumes at its first missing block, and
another image set is computed anew. The matrix is keyed by content like the embedding cache (``record --force``
keeps it); each image's bytes are checked against the atlas's recorded content hash before any block is computed.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings

import torch

from unitlens.atlas import Atlas
from unitlens.atlas.files import read_json, read_tensors, write_json, write_tensors
from unitlens.atlas.lock import check_writable
from unitlens.backends.base import PairwiseBackend
from unitlens.backends.cache import sample_keys
from unitlens.data.hashing import file_hashes
from unitlens.data.loading import load_batches
from unitlens.errors import AtlasError, BadInput, CorruptFile, UnitlensError
from unitlens.runtime import Progress

MAX_IMAGES = 8192  # largest matrix built: 8192² float32 = 256 MiB, 33.6M pairs
MEMORY_SHARE = 0.25  # of the machine's (CPU) or the accelerator's memory for row-block features
CPU_MEMORY = 2 * 2**30  # where the machine's memory cannot be read
REDONE = "the block is computed again"


def forwards(n: int, rows: int) -> int:
    """Network forwards of an (n, n) matrix in row blocks of ``rows`` images: each block once, then every later image
    once per block."""
    blocks = -(-n // rows)
    return n + sum(n - min(n, (b + 1) * rows) for b in range(blocks))


def block_pairs(n: int, start: int, rows: int) -> int:
    """Pairs a row block compares: its own upper triangle and every later image."""
    height = min(rows, n - start)
    return height * (height + 1) // 2 + height * (n - start - height)


def matrix_cost(n: int, rows: int | None = None) -> str:
    """The cost of an (n, n) matrix in words (pairs, forwards), for messages and logs."""
    pairs = n * (n + 1) // 2
    text = f"{pairs:,} image pairs"
    return text + (f" and {forwards(n, rows):,} network forwards ({rows} images' features in memory)" if rows else "")


def check_size(backend: PairwiseBackend, n: int, what: str = "MIS") -> None:
    """Refuse a matrix of more than ``MAX_IMAGES`` images, naming its cost and the ways out."""
    if n > MAX_IMAGES:
        raise BadInput(
            f"backend '{backend.name}' compares image pairs: {what} needs the similarity of every pair of the {n:,} "
            f"images its tasks use, {matrix_cost(n)}; more than {MAX_IMAGES:,} images are refused. Score "
            "fewer layers at a time (--layers), or use an embedding backend (offline, dreamsim, openclip:..., "
            "hf:..., timm:...), whose cost grows with the number of images, not its square")


def memory_budget(device: torch.device) -> int:
    """Bytes of row-block features: a quarter of the accelerator's memory, or of the machine's on a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * MEMORY_SHARE)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * MEMORY_SHARE)
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return CPU_MEMORY


class PairwiseMatrix:
    """The similarity matrix of a pairwise backend over samples of an atlas, computed once and kept on disk.

    ``get(ids)`` returns the (n, n) float32 matrix f(image_i, image_j) (minus the distance) in the order of ``ids``;
    ``pairs`` counts the pairs this object compared, ``stored`` the rows it read back.
    """

    def __init__(self, atlas, backend: PairwiseBackend, memory: int | None = None, chunk: int | None = None):
        if backend.embeds:
            raise BadInput(f"backend '{backend.name}' has embeddings: use EmbeddingCache and a dot product")
        self.atlas = Atlas.open(atlas)
        self.backend = backend
        self.memory = memory
        self.chunk = chunk or backend.chunk
        self.root = self.atlas.backend_path("pairwise", backend.name)
        self.pairs = 0
        self.stored = 0
        try:
            check_writable(self.root)
            self.persist = True
        except (BadInput, OSError):
            self.persist = False
            warnings.warn(f"atlas {self.atlas.path} is read-only: the {backend.name} similarity matrix is kept in "
                          "memory for this run only", stacklevel=2)

    def key(self, keys: list[str]) -> str:
        """The folder name of the matrix over images with these content keys, in this order."""
        h = hashlib.blake2b(digest_size=12)
        h.update(json.dumps([self.backend.name, self.backend.weights_id, self.backend.settings], sort_keys=True)
                 .encode())
        for k in keys:
            h.update(k.encode() + b"\0")
        return h.hexdigest()

    def _check_images(self, ids: list[int]) -> None:
        """Each image's bytes must still be those recorded (the matrix is keyed by them)."""
        samples = self.atlas.samples()
        if "content_hash" not in samples:
            return
        rows = samples.set_index("id").loc[ids].reset_index()
        now, _ = file_hashes(rows["path"].tolist(), known=rows)
        changed = [(int(i), p) for i, p, a, b in zip(rows["id"], rows["path"], now["content_hash"],
                                                      rows["content_hash"]) if a != b]
        if changed:
            i, path = changed[0]
            raise AtlasError(f"{len(changed)} images changed or became unreadable since atlas {self.atlas.path} was "
                             f"recorded, e.g. {path} (sample {i}); restore them, or record the atlas again with "
                             "unitlens record ... --force so its exemplars match the new images")

    def _rows_per_block(self, first: torch.Tensor) -> int:
        device = self.backend.device
        per_image = sum(f[:1].numel() * f.element_size() for f in self.backend.features(first[None]))
        budget = self.memory or memory_budget(torch.device(device))
        return max(1, min(MAX_IMAGES, int(budget // max(per_image, 1))))

    def get(self, ids, progress: bool = True) -> torch.Tensor:
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        n = len(ids)
        check_size(self.backend, n)
        keys = sample_keys(self.atlas)
        folder = self.root / self.key([keys[i] for i in ids])
        out = torch.empty(n, n)
        if n == 0:
            return out
        meta = self._meta(folder, n)
        dataset = self.atlas.dataset()

        def unreadable(i: int, path, err: Exception) -> None:
            raise UnitlensError(f"cannot read sample {i} ({path}): {err}")

        def batches(start: int, stop: int):
            for _, x, _ in load_batches(dataset, ids[start:stop], self.backend.preprocess, self.chunk,
                                        self.backend.device, unreadable, channels_last=False):
                yield x

        rows = meta.get("rows") if meta else None
        todo = []
        if rows:
            for start in range(0, n, rows):
                block = self._read(folder, start, min(rows, n - start), n)
                if block is None:
                    todo.append(start)
                else:
                    self._fill(out, start, block)
                    self.stored += len(block)
            if not todo:
                return out
        self._check_images(ids)
        if not rows:
            rows = self._rows_per_block(next(batches(0, 1))[0])
            meta = {"backend": self.backend.name, "weights": self.backend.weights_id,
                    "settings": self.backend.settings, "n": n, "rows": rows}
            if self.persist:
                folder.mkdir(parents=True, exist_ok=True)
                write_json(folder / "meta.json", meta)
            todo = list(range(0, n, rows))
        total = sum(block_pairs(n, start, rows) for start in todo)
        with Progress(f"{self.backend.name} pairs ({matrix_cost(n, rows)})", total, progress,
                      unit="pair") as bar:
            for start in todo:
                stop = min(n, start + rows)
                fa = self._block_features(batches(start, stop), stop - start)
                block = torch.empty(stop - start, n - start)
                block[:, :stop - start] = self.backend.compare(fa, fa)
                bar.advance((stop - start) * (stop - start + 1) // 2)
                col = stop
                for x in batches(stop, n):
                    block[:, col - start:col - start + len(x)] = self.backend.compare(fa, self.backend.features(x))
                    col += len(x)
                    bar.advance((stop - start) * len(x))
                del fa
                self.pairs += block_pairs(n, start, rows)
                if self.persist:
                    write_tensors(folder / f"rows-{start:06d}.safetensors", {"similarity": block})
                self._fill(out, start, block)
        return out

    def _block_features(self, chunks, height: int) -> list[torch.Tensor]:
        """The features of a row block, gathered chunk by chunk into tensors allocated once."""
        out: list[torch.Tensor] = []
        pos = 0
        for x in chunks:
            feats = self.backend.features(x)
            if not out:
                out = [f.new_empty((height, *f.shape[1:])) for f in feats]
            for dst, src in zip(out, feats):
                dst[pos:pos + len(x)] = src
            pos += len(x)
        return out

    def _meta(self, folder, n: int) -> dict | None:
        path = folder / "meta.json"
        if not path.is_file():
            return None
        try:
            meta = read_json(path, fix="the matrix is computed again")
        except CorruptFile:
            return None
        return meta if meta.get("n") == n and isinstance(meta.get("rows"), int) and meta["rows"] > 0 else None

    def _read(self, folder, start: int, height: int, n: int) -> torch.Tensor | None:
        path = folder / f"rows-{start:06d}.safetensors"
        if not path.is_file():
            return None
        try:
            block = read_tensors(path, fix=REDONE)["similarity"]
        except (CorruptFile, KeyError):
            return None
        return block if tuple(block.shape) == (height, n - start) else None

    @staticmethod
    def _fill(out: torch.Tensor, start: int, block: torch.Tensor) -> None:
        """Rows start.. over columns start.. of a symmetric matrix, and their mirror."""
        out[start:start + len(block), start:] = block
        out[start:, start:start + len(block)] = block.T
