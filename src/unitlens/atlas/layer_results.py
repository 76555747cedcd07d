"""``remove_layer_results(root, layers, fix)``: remove what every derived result of an atlas keeps for some layers.

The derived-result registry (``unitlens.atlas.layout.DERIVED``) says where each result keeps per-layer parts: JSON
indexes that list layers (a lens or probe ``meta.json``), tables with a ``layer`` column (scores, labels,
measures, evaluations) and per-layer files (lens layers and their vector tables, probe activations, θ maps).

Everything that will change is read first, so a damaged file stops the removal with a ``CorruptFile`` naming it
and ``fix(path)`` before anything changes. Then the indexes stop listing the layers (no result refers to them any
more), the tables lose their rows (identity stamps kept) and the layers' files go, each write atomic. An
interruption leaves results that list fewer layers than they keep files for, never the reverse, and the same
removal run again finishes it.
"""
from __future__ import annotations

import glob
import shutil
from collections.abc import Callable
from pathlib import Path

from unitlens.atlas.files import parquet_stamp, read_json, read_parquet, write_json, write_parquet
from unitlens.atlas.layout import DERIVED, layer_stem


def remove_layer_results(root: str | Path, layers: list[str], fix: Callable[[Path], str]) -> list[Path]:
    """Remove every registered per-layer part of ``layers`` from the atlas at ``root`` (see the module doc); returns
    the files changed or removed. ``fix(path)`` is the advice a damaged file's error carries."""
    root = Path(root)
    names = set(layers)
    indexes, tables = [], []
    for d in DERIVED.values():
        for pattern in d.layer_keys:
            for path in sorted(root.glob(pattern)):
                obj = read_json(path, fix=fix(path))
                listed = obj.get("layers")
                if isinstance(listed, dict) and names & set(listed):
                    indexes.append((path, {**obj, "layers": {k: v for k, v in listed.items() if k not in names}}))
        for pattern in d.layer_rows:
            for path in sorted(root.glob(pattern)):
                table = read_parquet(path, fix=fix(path))
                if "layer" in table and table["layer"].isin(names).any():
                    kept = table[~table["layer"].isin(names)].reset_index(drop=True)
                    tables.append((path, kept, parquet_stamp(path, fix=fix(path))))
    files = sorted({p for d in DERIVED.values() for pattern in d.layer_files for name in layers
                    for p in root.glob(pattern.replace("{stem}", glob.escape(layer_stem(name))))})
    for path, obj in indexes:
        write_json(path, obj)
    for path, table, stamp in tables:
        write_parquet(path, table, stamp=stamp)
    for path in files:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return [p for p, _ in indexes] + [p for p, _, _ in tables] + files
