"""Where everything lives inside an atlas folder, and what each derived result depends on.

The record pass writes the core files; every later step writes one registered derived result. ``record
--force`` clears the results that depend on the exemplars (and those that depend on the images when the
dataset changed), so no step builds atlas paths by hand and none is forgotten. Results keyed by image content
(the embedding cache) stay: they cannot go stale.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from unitlens.atlas.files import safe_name
from unitlens.registry import Registry

MANIFEST = "manifest.json"
UNITS = "units.parquet"
SAMPLES = "samples.parquet"
EXEMPLARS = "exemplars"
RECORD_STATE = "record_state.safetensors"
LOCK = ".lock"
CORE = (MANIFEST, UNITS, SAMPLES, EXEMPLARS, RECORD_STATE)


DERIVED_SEPARATOR = "::"  # a derived layer is named <recorded layer>::<name> (the features of a basis)


@dataclass(frozen=True)
class Derived:
    """A result some step adds to an atlas: its name, its path relative to the atlas and what it depends on
    (``exemplars``: the recorded units and exemplars; ``images``: the dataset's images by sample id;
    ``content``: nothing but the bytes of images, which are its keys).

    Where it keeps something per layer, the globs (relative to the atlas) that say where, so that removing a layer
    removes its part of every result (``unitlens.atlas.layer_results``): ``layer_keys``, JSON files whose
    ``layers`` object lists layers; ``layer_rows``, Parquet tables with a ``layer`` column; ``layer_files``,
    files or folders of one layer, ``{stem}`` standing for its ``layer_stem``. Relevance and audits have none:
    CRP runs the model's own modules only, never a derived layer."""

    name: str
    path: str
    depends_on: str
    what: str
    layer_keys: tuple[str, ...] = ()
    layer_rows: tuple[str, ...] = ()
    layer_files: tuple[str, ...] = ()


DERIVED: Registry[Derived] = Registry("derived result")
for _derived in (
    Derived("scores", "scores.parquet", "exemplars", "per-unit scores (unitlens mis, unitlens lens measures)",
            layer_rows=("scores.parquet",)),
    Derived("labels", "labels.parquet", "exemplars", "unit labels of every labelling method (unitlens lens label)",
            layer_rows=("labels.parquet",)),
    Derived("lens", "lens", "exemplars", "SemanticLens vectors per backend (unitlens lens embed)",
            layer_keys=("lens/*/meta.json",), layer_rows=("lens/*/*.parquet",),
            layer_files=("lens/*/layers/{stem}.safetensors", "lens/*/vectors.lancedb/{stem}.lance")),
    Derived("relevance", "relevance", "exemplars", "CRP relevance per class (unitlens relevance)"),
    Derived("audit", "audit", "exemplars", "audit verdicts (unitlens audit)"),
    Derived("basis", "basis", "exemplars", "fitted dictionaries of layers (unitlens basis fit)"),
    Derived("probe", "probe", "exemplars", "activations on labelled probe sets (unitlens probe)",
            layer_keys=("probe/*/meta.json",), layer_rows=("probe/*/labels/*.parquet", "probe/*/evaluation/*.parquet"),
            layer_files=("probe/*/layers/{stem}.safetensors",)),
    Derived("embeddings", "embeddings", "content", "cached image embeddings per backend, keyed by content"),
    Derived("pairwise", "pairwise", "content", "similarity matrices of pairwise backends (lpips-*, dists), keyed by "
            "content"),
    Derived("figures", "figures", "exemplars", "figures drawn from the atlas's results (unitlens plot ... --out "
            "ATLAS/figures), shown by the explorer"),
    Derived("explorer", "explorer", "images", "the explorer's cache: image thumbnails, θ maps (stamped with the "
            "lens they project)", layer_files=("explorer/maps/*/{stem}.json",)),
    Derived("featviz", "featviz", "exemplars", "feature visualisations per layer, with the activations they reach "
            "beside the natural ones (unitlens featviz)", layer_files=("featviz/{stem}",)),
):
    DERIVED.register(_derived.name, _derived)


def exemplar_path(root: str | Path, layer: str) -> Path:
    """``<root>/exemplars/<layer>.safetensors``; a layer name that is not a safe file name (a derived layer
    ``blocks.6.0.conv_pwl::sae``) gets its ``safe_name`` (module names, and ``NAME@i`` calls of a module run several
    times per forward, are already safe and stay as they are)."""
    stem = layer if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._@-]*", layer) else safe_name(layer, default="layer")
    return Path(root, EXEMPLARS, f"{stem}.safetensors")


def manifest_backup(root: str | Path, version: int) -> Path:
    """Where ``unitlens atlas upgrade`` keeps the manifest of format version ``version`` it replaced."""
    return Path(root, f"manifest.v{version}.json")


def layer_stem(layer: str) -> str:
    """The file stem of a layer's part of a derived result (lens, probe, explorer): its ``safe_name``."""
    return safe_name(layer, default="layer")


def derived_path(root: str | Path, name: str, *parts: str) -> Path:
    """``<root>/<path of derived result name>/<parts...>``; an unknown name is a programming error."""
    return Path(root, DERIVED.get(name).path, *parts)


def backend_dirname(backend_name: str) -> str:
    """The folder a backend's files live in: ``openclip:ViT-B-32/openai`` -> ``openclip_ViT-B-32_openai-<hash>``."""
    return safe_name(backend_name, default="backend")


def clear_derived(root: str | Path, images_changed: bool) -> list[str]:
    """Remove every derived result that the new exemplars make stale (and, when ``images_changed``, those
    that depend on the images); return the names removed."""
    removed = []
    for d in DERIVED.values():
        if d.depends_on == "content" or (d.depends_on == "images" and not images_changed):
            continue
        path = Path(root, d.path)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(d.name)
    return removed
