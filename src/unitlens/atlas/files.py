"""Atomic file writes (write to a temporary file in the same folder, then rename) for every atlas file, and the
readers that turn a damaged or missing file into a ``CorruptFile`` error naming it (never a raw parser traceback).

Parquet files can carry a small JSON ``stamp`` in their schema metadata (``write_parquet(..., stamp=)``,
``parquet_stamp``): derived results use it to say which atlas they belong to.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    import torch

from unitlens.errors import AtlasError, BadInput, CorruptFile, UnitlensError

STAMP_KEY = b"unitlens"
DAMAGED = "restore it from a backup or compute it again"


def _damaged(path: Path, err: BaseException, fix: str | None) -> CorruptFile:
    reason = "it does not exist" if isinstance(err, FileNotFoundError) else \
        f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'unreadable'}"
    return CorruptFile(f"cannot read {path} ({reason}); {fix or DAMAGED}")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` and move ``tmp`` onto ``path`` only if it succeeded, so readers never see half a file.

    A place this user may not write to is a ``BadInput`` and a full disk an ``AtlasError``, both naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _unwritable(path, err) from err
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise _unwritable(path, err) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwritable(path: Path, err: OSError) -> UnitlensError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return AtlasError(f"cannot write {path}: {err.strerror}; free some space and run the command again")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BadInput(f"cannot write {path}: {err.strerror} (a read-only location for this user); choose "
                        "another output folder, or --no-write where the command has it")
    return BadInput(f"cannot write {path}: {err.strerror or err}; choose another output folder")


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


def read_json(path: str | Path, fix: str | None = None) -> dict:
    """The JSON object in ``path``; a missing, truncated or non-object file is a ``CorruptFile`` naming it and
    ``fix`` (what to run to rebuild it)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise _damaged(path, err, fix) from err
    if not isinstance(obj, dict):
        raise _damaged(path, ValueError(f"holds a JSON {type(obj).__name__}, not an object"), fix)
    return obj


def write_parquet(path: str | Path, table: pd.DataFrame, stamp: dict | None = None) -> None:
    """Write ``table`` atomically; ``stamp`` (a JSON-able dict) goes into the file's schema metadata."""
    if stamp is None:
        atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                           STAMP_KEY: json.dumps(stamp, sort_keys=True).encode()})
    atomic_write(path, lambda tmp: pq.write_table(arrow, tmp))


def read_parquet(path: str | Path, fix: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The table in ``path``; a missing or damaged file is a ``CorruptFile`` naming it and ``fix``."""
    path = Path(path)
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise _damaged(path, err, fix) from err


def parquet_stamp(path: str | Path, fix: str | None = None) -> dict | None:
    """The stamp ``write_parquet`` put into ``path``'s schema metadata (None: written without one)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as err:
        raise _damaged(path, err, fix) from err
    raw = meta.get(STAMP_KEY)
    if raw is None:
        return None
    try:
        stamp = json.loads(raw)
    except ValueError as err:
        raise _damaged(path, err, fix) from err
    return stamp if isinstance(stamp, dict) else None


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_tensor_metadata(path: str | Path, fix: str | None = None) -> dict[str, str]:
    """The string metadata of a safetensors file (``write_tensors(..., metadata=)``); damaged: ``CorruptFile``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:
        raise _damaged(Path(path), err, fix) from err


def read_tensors(path: str | Path, fix: str | None = None, names: tuple[str, ...] | None = None
                 ) -> dict[str, torch.Tensor]:
    """The tensors in a safetensors file (only ``names`` when given: the others are not read); a missing or
    truncated file is a ``CorruptFile`` naming it and ``fix``."""
    try:
        if names is None:
            from safetensors.torch import load_file

            return load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            return {name: f.get_tensor(name) for name in names}
    except Exception as err:  # SafetensorError (truncated header or data), OSError
        raise _damaged(Path(path), err, fix) from err
