"""Atomic file writes (write to a temporary file in the same folder, then rename) for every atlas file."""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` and move ``tmp`` onto ``path`` only if it succeeded, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_name(name: str, default: str = "item", hashed: bool = True) -> str:
    """``name`` as a file name: runs of characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``.

    With ``hashed`` (the default) a name that had to change gets a short hash of the original appended, so two
    names never share a file; names that are already safe stay as they are.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or default
    if hashed and safe != name:
        safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return safe


def write_json(path: str | Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"))


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def write_parquet(path: str | Path, table: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_tensors(path: str | Path, names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; only ``names`` when given (the others are not read)."""
    if names is None:
        from safetensors.torch import load_file

        return load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {name: f.get_tensor(name) for name in names}
