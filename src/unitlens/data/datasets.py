"""``load_dataset(spec)``: an image dataset where every sample has a stable integer id, a path and metadata.

Specs: ``"demo"`` (bundled clip art), a folder (recursive; class = top-level sub-folder), or a file list
(``.txt`` one path per line, or ``.csv`` with a ``path`` column and optional metadata columns). Ids are
positions in the sorted (folders) or given (lists) order, so the same files always get the same ids.
"""
from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from unitlens.data.images import open_rgb
from unitlens.errors import BadInput, MissingFile

DEMO_ROOT = Path(__file__).parent / "demo"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageDataset(Dataset):
    """Images with ids ``0..n-1``. ``samples`` is a plain table: id, path (absolute), label, metadata columns.

    ``__getitem__`` returns ``(tensor | None, id)``; ``None`` marks an unreadable file, which the record
    pass skips with a warning that names it.
    """

    def __init__(self, samples: pd.DataFrame, spec: str, transform: Callable | None = None):
        if len(samples) == 0:
            raise BadInput(f"dataset '{spec}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.samples = samples.reset_index(drop=True)
        if "id" not in self.samples:
            self.samples.insert(0, "id", range(len(self.samples)))
        self.spec = spec
        self.transform = transform
        self._paths = self.samples["path"].tolist()

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, sample_id: int) -> Path:
        return Path(self._paths[sample_id])

    def image(self, sample_id: int):
        """The RGB PIL image of a sample (raises on unreadable files)."""
        return open_rgb(self._paths[sample_id])

    def __getitem__(self, sample_id: int) -> tuple[torch.Tensor | None, int]:
        try:
            img = self.image(sample_id)
            return (self.transform(img) if self.transform else img), sample_id
        except Exception:  # corrupt, truncated or unreadable: reported by the caller with the file name
            return None, sample_id

    def with_transform(self, transform: Callable | None) -> "ImageDataset":
        return ImageDataset(self.samples, self.spec, transform)

    def fingerprint(self) -> str:
        """Hash of (id, relative path, size) of every sample: identifies the data an atlas was recorded on."""
        h = hashlib.sha256()
        root = _common_root(self._paths)
        for i, p in enumerate(self._paths):
            path = Path(p)
            size = path.stat().st_size if path.exists() else -1
            h.update(f"{i}\t{path.relative_to(root).as_posix()}\t{size}\n".encode())
        return h.hexdigest()[:16]


def collate_readable(batch: list[tuple[torch.Tensor | None, int]]):
    """DataLoader collate for ``ImageDataset``: (stacked images or None if none was readable, their ids, the ids
    of the unreadable ones)."""
    images = [x for x, _ in batch if x is not None]
    ids = torch.tensor([i for x, i in batch if x is not None], dtype=torch.int64)
    failed = [i for x, i in batch if x is None]
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


def load_dataset(spec: str | Path, transform: Callable | None = None) -> ImageDataset:
    """Open ``spec`` (``"demo"``, a folder, or a ``.txt``/``.csv`` file list); errors before any model work."""
    spec = str(spec)
    if spec == "demo":
        index = DEMO_ROOT / "index.csv"
        if not index.is_file():
            raise MissingFile(f"the bundled demo set is missing ({index}); reinstall unitlens")
        samples = _list_samples(index)
        samples["label"] = samples["category"]
        return ImageDataset(samples, spec, transform)
    path = Path(spec).expanduser()
    if not path.exists():
        raise MissingFile(f"dataset '{spec}' does not exist: give 'demo', an image folder or a file list")
    if path.is_dir():
        return ImageDataset(_folder_samples(path.resolve()), spec, transform)
    if path.suffix in (".txt", ".csv"):
        samples = _list_samples(path.resolve())
        missing = [p for p in samples["path"] if not Path(p).exists()]
        if missing:
            raise MissingFile(f"{len(missing)} file(s) listed in {spec} do not exist, e.g. {missing[0]}")
        return ImageDataset(samples, spec, transform)
    raise BadInput(f"dataset '{spec}' is neither a folder nor a .txt/.csv file list")
