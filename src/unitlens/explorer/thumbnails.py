"""Thumbnails of an atlas's samples: JPEGs whose longest side is ``THUMB_SIZE``, made once and cached in the atlas.

They live under the atlas's ``explorer`` result (``explorer/thumbs/<size>/<id // 1000>/<id>.jpg``), each written
atomically, so a page never loads the full images and a second visit decodes nothing; the most recent ones are
also kept in memory (``MEMORY_ITEMS``). When the atlas folder cannot be written (read-only media), thumbnails are
made in memory and not kept on disk. A thumbnail is made only of a dataset image the explorer may serve
(``unitlens.explorer.paths.dataset_image``: inside the recorded dataset folder, with the recorded bytes).
"""
from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from unitlens.atlas import Atlas
from unitlens.atlas.files import atomic_write
from unitlens.data.images import open_rgb
from unitlens.errors import BadInput, Forbidden, MissingFile
from unitlens.explorer.defaults import THUMB_QUALITY, THUMB_SIZE
from unitlens.explorer.paths import dataset_image, inside

MEMORY_ITEMS = 8192  # thumbnails kept in memory (about 4 kB each at 128 px)


class Thumbnails:
    """``data(sample_id)``: the JPEG bytes of a sample's thumbnail; ``size_of(sample_id)``: its original size."""

    def __init__(self, atlas: Atlas, size: int = THUMB_SIZE):
        self.atlas = atlas
        self.size = int(size)
        self.root = atlas.derived_path("explorer", "thumbs", str(self.size))
        self._dataset = None
        self._root: Path | None = None
        self._hashes: list[str | None] | None = None  # content hash per sample (None: the atlas keeps none)
        self._sizes: dict[int, tuple[int, int]] = {}
        self._memory: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.writable = True

    @property
    def dataset(self):
        with self._lock:
            if self._dataset is None:
                dataset = self.atlas.dataset()
                self._root = self.atlas.dataset_root
                self._hashes = dataset.content_keys() if dataset.hashed else None
                self._dataset = dataset
        return self._dataset

    @property
    def loaded(self) -> bool:
        """Whether the sample table has been read (the first lookup reads it)."""
        return self._dataset is not None

    def check(self, sample_id: int) -> int:
        n = len(self.dataset)
        if not 0 <= int(sample_id) < n:
            raise BadInput(f"sample {sample_id} is not in atlas {self.atlas.path} (ids 0..{n - 1})")
        return int(sample_id)

    def path(self, sample_id: int) -> Path:
        return self.root / f"{sample_id // 1000:04d}" / f"{sample_id}.jpg"

    def original(self, sample_id: int) -> tuple[bytes, str]:
        """The bytes and media type of the sample's image file, when it is the dataset image the atlas recorded
        (``Forbidden`` otherwise, ``MissingFile`` when it is gone)."""
        sample_id = self.check(sample_id)
        what = f"sample {sample_id} of atlas {self.atlas.path}"
        content_hash = None
        if self._hashes is not None:
            content_hash = self._hashes[sample_id]
            if content_hash is None:
                raise Forbidden(f"{what} is not served: it could not be read when the atlas was recorded, so no "
                                "content hash vouches for it")
        assert self._root is not None  # set with the dataset, which check() loaded
        return dataset_image(self.dataset.path(sample_id), self._root, content_hash, what)

    def size_of(self, sample_id: int) -> tuple[int, int] | None:
        """(width, height) of the original image (from its header; remembered), None when it is not served."""
        sample_id = self.check(sample_id)
        if sample_id not in self._sizes:
            try:
                with Image.open(io.BytesIO(self.original(sample_id)[0])) as img:
                    self._sizes[sample_id] = img.size
            except (OSError, MissingFile, Forbidden):
                return None
        return self._sizes[sample_id]

    def at_hand(self, sample_id: int) -> bytes | None:
        """The thumbnail's JPEG bytes when it is made already (in memory or in the atlas's cache), else None: no
        image is decoded here."""
        found = self._memory.get(sample_id)
        if found is not None:
            return found
        path = self.path(sample_id)
        if path.is_file() and inside(self.atlas.path, path):
            return self._remember(sample_id, path.read_bytes())
        return None

    def inline(self, sample_ids: Iterable[int]) -> dict[str, str]:
        """Data URIs of the thumbnails among ``sample_ids`` that are at hand (none is made here), keyed by id: a page
        that gets them with its data draws its images without one request each (a fresh browser opens a unit page
        in about half the time)."""
        out: dict[str, str] = {}
        for sample_id in dict.fromkeys(int(i) for i in sample_ids):
            data = self.at_hand(sample_id)
            if data is not None:
                out[str(sample_id)] = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
        return out

    def _remember(self, sample_id: int, data: bytes) -> bytes:
        with self._lock:
            self._memory[sample_id] = data
            self._memory.move_to_end(sample_id)
            while len(self._memory) > MEMORY_ITEMS:
                self._memory.popitem(last=False)
        return data

    def data(self, sample_id: int) -> bytes:
        """The thumbnail's JPEG bytes, made and cached on first use."""
        sample_id = self.check(sample_id)
        found = self.at_hand(sample_id)
        if found is not None:
            return found
        path = self.path(sample_id)
        data = self.original(sample_id)[0]
        try:
            image = open_rgb(io.BytesIO(data))
        except (OSError, ValueError) as err:
            raise MissingFile(f"sample {sample_id} of atlas {self.atlas.path} cannot be read "
                              f"({self.dataset.path(sample_id)}: {err})") from err
        self._sizes[sample_id] = image.size
        image.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=THUMB_QUALITY, optimize=True)
        data = buffer.getvalue()
        if self.writable:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if inside(self.atlas.path, path.parent):  # never through a link that leads out of the atlas
                    atomic_write(path, lambda tmp: tmp.write_bytes(data))
            except OSError:
                self.writable = False  # read-only atlas: serve from memory from now on
        return self._remember(sample_id, data)
