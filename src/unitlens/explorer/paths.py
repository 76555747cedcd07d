"""Which files the explorer may serve: only files inside a given atlas or study folder, after resolving links.

Every file the server sends from an atlas or study folder (figures, cached thumbnails) is looked up by a name the
server listed itself and then checked with ``inside``, so neither ``..`` in a URL nor a symbolic link that points
out of the folder reaches another file.
"""
from __future__ import annotations

from pathlib import Path

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
