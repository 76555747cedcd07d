"""``load_dataset(spec)``: an image dataset where every sample has a stable integer id, a path and metadata.

Specs: ``"demo"`` (bundled clip art), a folder (recursive; class = top-level sub-folder), or a file list
(``.txt`` one path per line, or ``.csv`` with a ``path`` column and optional metadata columns). Ids are
positions in the sorted (folders) or given (lists) order, so the same files always get the same ids.

The fingerprint that identifies a dataset is computed from every sample's relative path and the hash of its
bytes (``unitlens.data.hashing``; the hashes are kept in the samples table as ``content_hash`` and reused while
a file is unchanged), so an image replaced by another of the same size changes it. ``content_hash=False`` skips
reading the files for huge datasets: the fingerprint then uses paths and byte sizes only, and a same-size
replacement goes unnoticed.
"""
from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from unitlens.data.hashing import COLUMNS as HASH_COLUMNS
from unitlens.data.hashing import file_hashes
from unitlens.data.images import open_rgb
from unitlens.data.unreadable import Unreadable
from unitlens.errors import BadInput, MissingFile

DEMO_ROOT = Path(__file__).parent / "demo"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageDataset(Dataset):
    """Images with ids ``0..n-1``. ``samples`` is a plain table: id, path (absolute), label, metadata columns.

    ``__getitem__`` returns ``(tensor | Unreadable, id)``; ``Unreadable`` (the reason) marks a file that could not
    be read, which the record pass skips with a warning that names it and says why.

    Parameters
    ----------
    samples : pandas.DataFrame
        One row per image: ``path`` (absolute), ``label``, metadata columns, optionally ``id`` (default:
        positions) and content-hash columns.
    spec : str
        How the dataset was named (``demo``, a folder, a file list); kept in the atlas manifest.
    transform : callable, optional
        Applied to each PIL image in ``__getitem__`` (the model's preprocessing).
    content_hash : bool
        Fingerprint the bytes of every file (default) or only paths and sizes (see the module).

    Raises
    ------
    BadInput
        If ``samples`` is empty.
    """

    def __init__(self, samples: pd.DataFrame, spec: str, transform: Callable | None = None,
                 content_hash: bool = True):
        if len(samples) == 0:
            raise BadInput(f"dataset '{spec}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.samples = samples.reset_index(drop=True)
        if "id" not in self.samples:
            self.samples.insert(0, "id", range(len(self.samples)))
        if not content_hash:
            self.samples = self.samples.drop(columns=[c for c in HASH_COLUMNS if c in self.samples])
        self.spec = spec
        self.transform = transform
        self.content_hash = content_hash
        self._paths = self.samples["path"].tolist()

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, sample_id: int) -> Path:
        """The file of a sample.

        Parameters
        ----------
        sample_id : int
            The sample's id (its row in ``samples``).

        Returns
        -------
        Path
            The absolute path of the image file.
        """
        return Path(self._paths[sample_id])

    @property
    def root(self) -> Path:
        """The deepest folder that holds every sample (the folder given, for a folder dataset)."""
        return _common_root(self._paths)

    def image(self, sample_id: int) -> Image.Image:
        """The RGB PIL image of a sample.

        Parameters
        ----------
        sample_id : int
            The sample's id.

        Returns
        -------
        PIL.Image.Image
            The image in RGB, as stored (no transform applied).

        Raises
        ------
        OSError
            If the file cannot be read or decoded (PIL's ``DecompressionBombError`` for a huge image);
            ``__getitem__`` returns ``Unreadable`` instead.
        """
        return open_rgb(self._paths[sample_id])

    def __getitem__(self, sample_id: int) -> tuple[torch.Tensor | Image.Image | Unreadable, int]:
        try:
            img = self.image(sample_id)
            return (self.transform(img) if self.transform else img), sample_id
        except Exception as err:  # corrupt, truncated, too large: reported by the caller with the file name
            return Unreadable.of(err), sample_id

    def with_transform(self, transform: Callable | None) -> "ImageDataset":
        """The same samples with another transform.

        Parameters
        ----------
        transform : callable or None
            Applied to each PIL image in ``__getitem__``; None yields PIL images.

        Returns
        -------
        ImageDataset
            A new dataset sharing the samples table.
        """
        return ImageDataset(self.samples, self.spec, transform, self.content_hash)

    def with_content_hash(self, content_hash: bool) -> "ImageDataset":
        """The same samples, fingerprinted by content (True) or by paths and sizes only (False).

        Parameters
        ----------
        content_hash : bool
            Whether :meth:`fingerprint` hashes the files' bytes.

        Returns
        -------
        ImageDataset
            A new dataset with the same samples and transform.
        """
        return ImageDataset(self.samples, self.spec, self.transform, content_hash)

    @property
    def hashed(self) -> bool:
        """Whether every sample's content hash is known (computed, or read from an atlas)."""
        return "content_hash" in self.samples

    def hash_contents(self, known: pd.DataFrame | str | Path | None = None, progress: bool = False) -> int:
        """Hash every file's bytes into the samples table.

        Adds the columns ``file_bytes``, ``file_mtime_ns``, ``file_ctime_ns`` and ``content_hash``; hashes in
        ``known`` are reused for files whose size and times did not change.

        Parameters
        ----------
        known : pandas.DataFrame, str or Path, optional
            Earlier hashes: a samples table, or the path of a samples.parquet (a missing or unreadable file is
            ignored).
        progress : bool
            Show a progress bar.

        Returns
        -------
        int
            The number of files read.
        """
        if isinstance(known, (str, Path)):
            try:
                known = pd.read_parquet(known) if Path(known).is_file() else None
            except Exception:  # a damaged earlier table only means hashing every file again
                known = None
        table, n_read = file_hashes(self._paths, known, progress=progress)
        for column in HASH_COLUMNS:
            self.samples[column] = table[column].to_numpy()
        return n_read

    def content_keys(self) -> list[str | None]:
        """Per sample its content hash.

        Returns
        -------
        list of str or None
            In id order; None where unknown (not hashed, or unreadable when hashed).
        """
        if not self.hashed:
            return [None] * len(self)
        return [h if isinstance(h, str) else None for h in self.samples["content_hash"]]

    def fingerprint(self) -> str:
        """Identifies the data an atlas was recorded on; hashes the files if not done yet.

        Returns
        -------
        str
            16 hex digits of a hash of (id, relative path, content hash) of every sample, or of (id, relative
            path, byte size) with ``content_hash=False``.
        """
        if self.content_hash and not self.hashed:
            self.hash_contents()
        h = hashlib.sha256()
        root = self.root
        keys = self.content_keys() if self.content_hash else None
        for i, p in enumerate(self._paths):
            path = Path(p)
            if keys is not None:
                what = keys[i] or "-"
            else:
                what = str(path.stat().st_size if path.exists() else -1)
            h.update(f"{i}\t{path.relative_to(root).as_posix()}\t{what}\n".encode())
        return h.hexdigest()[:16]


def collate_readable(batch: list[tuple[torch.Tensor | Unreadable, int]]):
    """DataLoader collate for ``ImageDataset``: (stacked images or None if none was readable, their ids, and
    ``(id, Unreadable)`` for each unreadable one)."""
    images = [x for x, _ in batch if not isinstance(x, Unreadable)]
    ids = torch.tensor([i for x, i in batch if not isinstance(x, Unreadable)], dtype=torch.int64)
    failed = [(i, x) for x, i in batch if isinstance(x, Unreadable)]
    return (torch.stack(images) if images else None), ids, failed


def _common_root(paths: list[str]) -> Path:
    import os

    return Path(os.path.commonpath(paths)) if len(paths) > 1 else Path(paths[0]).parent


def _folder_samples(root: Path) -> pd.DataFrame:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    rel = [p.relative_to(root) for p in files]
    return pd.DataFrame({
        "path": [str(p) for p in files],
        "label": [r.parts[0] if len(r.parts) > 1 else "" for r in rel],
        "folder": [r.parent.as_posix() if len(r.parts) > 1 else "" for r in rel],
    })


def _list_samples(listing: Path) -> pd.DataFrame:
    base = listing.parent
    if listing.suffix == ".csv":
        with listing.open(newline="", encoding="utf-8") as f:
            table = pd.DataFrame(list(csv.DictReader(f)))
        if "path" not in table:
            raise BadInput(f"{listing} has no 'path' column; columns are {list(table.columns)}")
    else:
        lines = [ln.strip() for ln in listing.read_text(encoding="utf-8").splitlines()]
        table = pd.DataFrame({"path": [ln for ln in lines if ln and not ln.startswith("#")]})
    table["path"] = [str(p if Path(p).is_absolute() else (base / p).resolve()) for p in table["path"]]
    if "label" not in table:
        table["label"] = ""
    return table


def load_dataset(spec: str | Path, transform: Callable | None = None, content_hash: bool = True) -> ImageDataset:
    """Open an image dataset; errors come before any model work.

    Parameters
    ----------
    spec : str or Path
        ``"demo"`` (bundled clip art), a folder (recursive; class = top-level sub-folder), or a file list
        (``.txt`` one path per line, ``.csv`` with a ``path`` column and optional metadata columns; relative
        paths are relative to the list).
    transform : callable, optional
        Applied to each PIL image when read (the model's preprocessing).
    content_hash : bool
        See ``ImageDataset``; the files are hashed when the fingerprint is first asked for.

    Returns
    -------
    ImageDataset
        Samples with ids ``0..n-1`` in sorted (folder) or given (list) order.

    Raises
    ------
    MissingFile
        If the folder, the list or a listed file does not exist.
    BadInput
        If ``spec`` is neither, a ``.csv`` has no ``path`` column, or no image is found.
    """
    spec = str(spec)
    if spec == "demo":
        index = DEMO_ROOT / "index.csv"
        if not index.is_file():
            raise MissingFile(f"the bundled demo set is missing ({index}); reinstall unitlens")
        samples = _list_samples(index)
        samples["label"] = samples["category"]
        return ImageDataset(samples, spec, transform, content_hash)
    path = Path(spec).expanduser()
    if not path.exists():
        raise MissingFile(f"dataset '{spec}' does not exist: give 'demo', an image folder or a file list")
    if path.is_dir():
        return ImageDataset(_folder_samples(path.resolve()), spec, transform, content_hash)
    if path.suffix in (".txt", ".csv"):
        samples = _list_samples(path.resolve())
        missing = [p for p in samples["path"] if not Path(p).exists()]
        if missing:
            raise MissingFile(f"{len(missing)} file(s) listed in {spec} do not exist, e.g. {missing[0]}")
        return ImageDataset(samples, spec, transform, content_hash)
    raise BadInput(f"dataset '{spec}' is neither a folder nor a .txt/.csv file list")
