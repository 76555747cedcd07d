"""``redo_advice(root, manifest, path)``: the narrowest command that rebuilds one damaged file of an atlas.

A damaged lens layer is embedded again alone (``lens embed --layers L --force``), a damaged basis fitted again alone,
a derived layer recorded again alone, labels of one probe set labelled again, a cache file deleted: never "delete
all of lens/<backend>" for one file. Only what cannot be rebuilt in parts says so: the core files (record the atlas
again) and a scores table that cannot be read at all.

The advice reads what it can to fill in names (the backend of a lens folder, the kind of a basis, the spec of a
probe set); where the file that says it is itself damaged, the command shows a placeholder in capitals.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from unitlens.atlas.layout import DERIVED_SEPARATOR, EXEMPLARS, MANIFEST, SAMPLES, UNITS, exemplar_path, layer_stem

if TYPE_CHECKING:
    from unitlens.atlas.manifest import Manifest


def rerecord(root: Path) -> str:
    """How to rebuild a core file: the atlas's record run, again."""
    return (f"record the atlas again (the same unitlens record command with --force --out {root}); "
            f"unitlens atlas verify {root} lists every damaged file")


def rerecord_layer(root: Path, manifest: Manifest, layer: str) -> str:
    """How to rebuild one layer's exemplars and units: a derived layer's basis record, else the atlas's record."""
    if layer in manifest.derived_layers:
        return f"record that basis again: unitlens basis record {root} '{layer}' --force"
    return rerecord(root)


def _json_field(path: Path, key: str) -> str | None:
    from unitlens.atlas.files import read_json
    from unitlens.errors import CorruptFile

    try:
        value = read_json(path).get(key)
    except CorruptFile:
        return None
    return value if isinstance(value, str) else None


def _layers_by_stem(manifest: Manifest) -> dict[str, str]:
    names = [info.name for info in manifest.layers]
    return {**{exemplar_path("", n).stem: n for n in names}, **{layer_stem(n): n for n in names}}


def redo_advice(root: str | Path, manifest: Manifest, path: str | Path) -> str:
    """What rebuilds ``path`` (a file of the atlas at ``root`` whose manifest is ``manifest``), and nothing else."""
    root, path = Path(root), Path(path)
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix()
    stems = _layers_by_stem(manifest)
    atlas = str(root)

    def backend(folder: str) -> str:
        return _json_field(root / "lens" / folder / "meta.json", "backend") or "BACKEND"

    if rel in (MANIFEST, UNITS, SAMPLES):
        return rerecord(root)
    if m := re.fullmatch(rf"{EXEMPLARS}/(.+)\.safetensors", rel):
        layer = stems.get(m[1])
        return rerecord_layer(root, manifest, layer) if layer else f"a layer the manifest does not list: delete {path}"
    if rel == "scores.parquet":
        return (f"the whole table is unreadable: delete {path} and score again (unitlens mis {atlas}, and unitlens "
                f"lens measures {atlas} where it had lens measures)")
    if rel == "labels.parquet":
        return (f"it holds every method's labels: delete {path} and label again (unitlens lens label {atlas} "
                "--method ..., for each method)")
    if m := re.fullmatch(r"lens/([^/]+)/(layers/([^/]+)\.safetensors|vectors\.lancedb/([^/]+)\.lance/.*)", rel):
        layer = stems.get(m[3] or m[4])
        if layer is None:
            return f"it is of no layer of this atlas (a leftover of a removed layer): delete {path}"
        return (f"embed that layer again: unitlens lens embed {atlas} --backend {backend(m[1])} --layers '{layer}' "
                "--force")
    if m := re.fullmatch(r"lens/([^/]+)/(.+)", rel):
        folder, name = m[1], m[2]
        if name == "measures.parquet":
            return f"measure again: unitlens lens measures {atlas} --backend {backend(folder)}"
        if name == "labels.parquet":
            return (f"label again (it holds the last labels): the unitlens lens label {atlas} --backend "
                    f"{backend(folder)} command that wrote it, or delete it")
        if name == "null_image.safetensors":
            return (f"delete it: unitlens lens embed {atlas} --backend {backend(folder)} makes it again (and embeds "
                    "nothing else that is embedded already)")
        return (f"delete {root / 'lens' / folder} and embed again: unitlens lens embed {atlas} --backend "
                f"{backend(folder)}")
    if m := re.fullmatch(r"basis/([^/]+)/([^/]+)/[^/]+", rel):
        layer, name = stems.get(m[1], m[1]), m[2]
        derived = f"{layer}{DERIVED_SEPARATOR}{name}"
        kind = _json_field(root / "basis" / m[1] / name / "basis.json", "kind") or \
            manifest.derived_layers.get(derived, {}).get("kind") or "KIND"
        then = f", then unitlens basis record {atlas} '{derived}'" if derived in manifest.derived_layers else ""
        return (f"fit that basis again: unitlens basis fit {atlas} --layer '{layer}' --kind {kind} --name {name} "
                f"--force{then}")
    if rel.startswith("basis/.record-state"):
        return f"delete {path}: a checkpoint of an unfinished unitlens basis record, which then starts over"
    if m := re.fullmatch(r"basis/compare-.*\.png", rel):
        return f"delete it, or draw it again: unitlens basis compare {atlas} --layer LAYER"
    if m := re.fullmatch(r"probe/([^/]+)/(.+)", rel):
        probe, name = m[1], m[2]
        if m2 := re.fullmatch(r"labels/(.+)\.parquet", name):
            return f"label again: unitlens lens label {atlas} --method {m2[1]} --probe {probe}"
        if name.startswith("evaluation/"):
            return f"evaluate again: unitlens lens evaluate-labels {atlas} --probe {probe}"
        if name.startswith("embeddings/"):
            return f"delete {path}: the next labelling with that backend embeds the probe images again"
        spec = _json_field(root / "probe" / probe / "meta.json", "spec") or "PROBE_SPEC"
        return f"run that probe pass again: unitlens probe {atlas} --data {spec} --name {probe}"
    if m := re.fullmatch(r"relevance/class_(\d+)\.(parquet|json)", rel):
        return f"compute it again: unitlens relevance {atlas} --class {m[1]}"
    if re.fullmatch(r"relevance/predicted\.(parquet|json)", rel):
        return f"compute it again: unitlens relevance {atlas} --predicted"
    if m := re.fullmatch(r"audit/(.+)\.[a-z]+", rel):
        return (f"run the unitlens audit alignment command that wrote it again (its settings are in "
                f"{root / 'audit' / (m[1] + '.json')}), or delete the audit/{m[1]}.* files")
    if rel.startswith("embeddings/"):
        return "it is dropped and embedded again on next use"
    if rel.startswith("explorer/"):
        return f"delete {path}: the explorer makes it again"
    if rel.startswith("figures/"):
        return f"delete {path}, or draw it again (unitlens plot ... --out {root / 'figures'})"
    return f"delete {path} and compute it again"
