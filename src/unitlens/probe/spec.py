"""``load_probe_spec(spec)``: a labelled probe set, as image paths and a boolean image x concept matrix.

Two forms:

- a folder of concept folders: every sub-folder is a concept and holds its images (searched recursively);
  images directly in the folder belong to no concept (they are negatives for every concept). A file that two
  concept folders share (through a link) is an error: a folder spec gives each image one concept; use a CSV for
  images with several.
- a CSV with a ``path`` column (relative to the CSV's folder, or absolute) and one or more concept columns: a
  column of 0/1 (also true/false, yes/no) is one concept named by the column; any other column names one
  concept per distinct value (blank: none). A value that names concepts in two columns becomes
  ``<column>:<value>`` in both.

Every error names the file and the fix; nothing here opens an image.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unitlens.errors import BadInput, MissingFile

BINARY = {"0": False, "1": True, "true": True, "false": False, "yes": True, "no": False, "": False}


@dataclass
class ProbeSpec:
    """Probe images and which concepts each shows."""

    paths: list[Path]  # absolute, in a fixed order (sorted for folders, file order for CSVs)
    concepts: list[str]
    membership: np.ndarray  # (N, K) bool
    source: str
    kind: str  # "folders" or "csv"

    def __len__(self) -> int:
        return len(self.paths)


def image_suffixes() -> set[str]:
    from unitlens.data.datasets import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _images_under(folder: Path) -> list[Path]:
    suffixes = image_suffixes()
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _folder_spec(root: Path) -> ProbeSpec:
    suffixes = image_suffixes()
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise BadInput(f"probe folder {root} has no concept folders: give one sub-folder of images per concept, or "
                       "a CSV with a path column and concept columns")
    owner: dict[Path, str] = {}
    files: dict[str, list[Path]] = {}
    for folder in folders:
        images = _images_under(folder)
        if not images:
            raise BadInput(f"concept folder {folder} holds no images ({', '.join(sorted(suffixes))}); add images "
                           "or remove the folder")
        for image in images:
            real = image.resolve()
            if real in owner:
                raise BadInput(f"concept folders '{owner[real]}' and '{folder.name}' overlap: both hold {real}; a "
                               "folder spec gives each image one concept, so use a CSV with concept columns for "
                               "images of several concepts")
            owner[real] = folder.name
        files[folder.name] = images
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    concepts = list(files)
    paths = [p.resolve() for name in concepts for p in files[name]] + [p.resolve() for p in loose]
    membership = np.zeros((len(paths), len(concepts)), dtype=bool)
    row = 0
    for k, name in enumerate(concepts):
        membership[row:row + len(files[name]), k] = True
        row += len(files[name])
    return ProbeSpec(paths, concepts, membership, str(root), "folders")


def _csv_spec(listing: Path, columns: list[str] | None) -> ProbeSpec:
    try:
        with listing.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BadInput(f"cannot read probe list {listing}: {err}") from err
    if "path" not in header:
        raise BadInput(f"probe list {listing} has no 'path' column (columns: {', '.join(header) or 'none'}); "
                       "name the image files in a column called path")
    if columns is None:
        columns = [c for c in header if c != "path"]
        if not columns:
            raise BadInput(f"probe list {listing} has no concept column besides path; add one (0/1 or concept names)")
    missing = [c for c in columns if c not in header]
    if missing:
        raise BadInput(f"probe list {listing} has no column(s) {', '.join(missing)}; its columns are "
                       f"{', '.join(header)} (choose concept columns with --columns)")
    if not rows:
        raise BadInput(f"probe list {listing} lists no images")
    base = listing.parent
    paths = [Path(r["path"]) if Path(r["path"]).is_absolute() else (base / r["path"]) for r in rows]
    paths = [p.resolve() for p in paths]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise MissingFile(f"{len(absent)} image(s) listed in {listing} do not exist, e.g. {absent[0]}")
    seen: dict[Path, int] = {}
    for i, p in enumerate(paths):
        if p in seen:
            raise BadInput(f"probe list {listing} lists {p} twice (rows {seen[p] + 2} and {i + 2}); list each image "
                           "once with all its concepts")
        seen[p] = i
    per_column: dict[str, list[tuple[str, np.ndarray]]] = {}
    for col in columns:
        values = [(r.get(col) or "").strip() for r in rows]
        if all(v.lower() in BINARY for v in values):
            per_column[col] = [(col, np.array([BINARY[v.lower()] for v in values]))]
        else:
            names = sorted({v for v in values if v})
            per_column[col] = [(v, np.array([x == v for x in values])) for v in names]
    counts: dict[str, int] = {}
    for col in columns:
        for name, _ in per_column[col]:
            counts[name] = counts.get(name, 0) + 1
    concepts, cols = [], []
    for col in columns:
        for name, indicator in per_column[col]:
            concepts.append(f"{col}:{name}" if counts[name] > 1 else name)
            cols.append(indicator)
    membership = np.stack(cols, 1)
    empty = [c for c, n in zip(concepts, membership.sum(0)) if n == 0]
    if empty:
        raise BadInput(f"concept(s) {', '.join(empty)} of {listing} hold no image (column all 0); drop the column "
                       "or mark its images")
    return ProbeSpec(paths, concepts, membership, str(listing), "csv")


def load_probe_spec(spec: str | Path, columns: list[str] | None = None) -> ProbeSpec:
    """The probe set at ``spec``: a folder of concept folders, or a CSV (``columns``: its concept columns; None:
    every column but path)."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise MissingFile(f"probe set {spec} does not exist: give a folder of concept folders or a CSV with a path "
                          "column and concept columns")
    if path.is_dir():
        if columns:
            raise BadInput("--columns applies to CSV probe lists, not to folders of concept folders")
        return _folder_spec(path.resolve())
    if path.suffix.lower() == ".csv":
        return _csv_spec(path.resolve(), columns)
    raise BadInput(f"probe set {spec} is neither a folder of concept folders nor a .csv list")
