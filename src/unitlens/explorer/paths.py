"""Which files the explorer may serve: files inside a given atlas or study folder, after resolving links, and the
images of the dataset an atlas was recorded on, as they were recorded.

Every file the server sends from an atlas or study folder (figures, cached thumbnails) is looked up by a name the
server listed itself and then checked with ``inside``, so neither ``..`` in a URL nor a symbolic link that points
out of the folder reaches another file. A sample's image (``dataset_image``) is sent, or made into a thumbnail, only
when its path lies inside the dataset folder the atlas was recorded from and its bytes have the recorded content
hash: a ``samples.parquet`` that names another file (``/etc/passwd``, a private photo, another image of the
dataset) gets a ``Forbidden``, never the file.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from unitlens.data.hashing import digest
from unitlens.errors import Forbidden, MissingFile

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
               ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp", ".tif": "image/tiff",
               ".tiff": "image/tiff", ".ppm": "image/x-portable-pixmap", ".pgm": "image/x-portable-graymap"}


def inside(root: str | Path, path: str | Path) -> bool:
    """True when ``path``, with every symbolic link resolved, is ``root`` or lies under it (resolved too)."""
    try:
        Path(path).resolve(strict=True).relative_to(Path(root).resolve(strict=True))
    except (OSError, ValueError):
        return False
    return True


def dataset_image(path: str | Path, root: str | Path, content_hash: str | None, what: str) -> tuple[bytes, str]:
    """The bytes and media type of the image at ``path`` (``what``: "sample 3 of atlas X", for messages), read
    once, when the explorer may send them: ``path`` lies inside the dataset folder ``root`` (as written and with
    links resolved), its bytes hash to ``content_hash`` (None: the atlas keeps no hashes) and Pillow knows them
    as an image. ``Forbidden`` otherwise; ``MissingFile`` when the file is gone."""
    root, path = Path(root), Path(path)
    if not Path(os.path.abspath(path)).is_relative_to(os.path.abspath(root)):
        raise Forbidden(f"{what} is not served: {path} lies outside the folder the atlas's images were recorded "
                        f"from ({root})")
    if not path.is_file():
        raise MissingFile(f"{what} is missing ({path}); the atlas's dataset has moved: record it again where the "
                          "images are")
    if not inside(root, path):
        raise Forbidden(f"{what} is not served: {path} is a link that leads out of the folder the atlas's images "
                        f"were recorded from ({root})")
    data = path.read_bytes()
    if content_hash is not None and digest(data) != content_hash:
        raise Forbidden(f"{what} is not served: {path} does not hold the bytes the atlas was recorded on (its "
                        "content hash differs); the dataset changed since: record the atlas again "
                        "(unitlens record --force)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = Image.MIME.get(image.format or "", "application/octet-stream")
    except (UnidentifiedImageError, OSError) as err:
        raise Forbidden(f"{what} is not served: {path} is not an image file ({err})") from err
    return data, kind


def figure_files(root: str | Path, folders: list[Path]) -> dict[str, Path]:
    """The figures under ``folders`` of ``root``, by their path relative to ``root`` (posix); links that lead
    out of ``root`` and files that are not figures are left out."""
    root = Path(root)
    found = {}
    for folder in folders:
        if not folder.is_dir() or not inside(root, folder):
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in FIGURE_SUFFIXES and path.is_file() and inside(root, path):
                found[path.relative_to(root).as_posix()] = path
    return found


def media_type(path: str | Path) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")
