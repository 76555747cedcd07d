"""``upgrade_atlas(path)``: rewrite an atlas's manifest in the current format version (``unitlens atlas upgrade``).

Each step from one version to the next fills in what the newer version keeps, from the atlas's own files:

- 1 -> 2: ``format_version``; ``options.record`` from the record configuration (the options that shaped the
  atlas: layers, k, spatial, tokens, tie_seed, content_hash; the run's other options, which change nothing in it,
  were not kept); ``dataset.root``, the deepest folder that holds every sample; ``n_nonfinite`` from
  ``units.parquet``.

The old manifest is kept beside it (``manifest.v<N>.json``, an earlier copy left as it is), then the new one is
written atomically under the atlas's write lock; the result is checked before anything is written, so a damaged
manifest is refused and left as it was. An atlas in the current version is left untouched (no changes).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unitlens.atlas.advice import rerecord
from unitlens.atlas.files import atomic_write, read_json, read_parquet
from unitlens.atlas.layout import MANIFEST, SAMPLES, UNITS, manifest_backup
from unitlens.atlas.lock import writing
from unitlens.atlas.manifest import FORMAT_VERSION, READ_AS_IS, Manifest, format_version
from unitlens.errors import AtlasError

RECORD_CONFIG_OPTIONS = ("layers", "k", "spatial", "tokens", "tie_seed", "content_hash")


@dataclass(frozen=True)
class Upgrade:
    """What ``upgrade_atlas`` did: the version found and written, each change in words, the backup (None: the
    atlas was current, nothing written)."""

    path: Path
    from_version: int
    to_version: int
    changes: list[str] = field(default_factory=list)
    backup: Path | None = None


def _v1_to_v2(data: dict[str, Any], root: Path) -> list[str]:
    changes = []
    if "options" not in data:
        config = data.get("config", {})
        data["options"] = {"record": {k: config[k] for k in RECORD_CONFIG_OPTIONS if k in config}}
        changes.append("options.record: added from the record configuration ("
                       + ", ".join(data["options"]["record"]) + ")")
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and "root" not in dataset and (root / SAMPLES).is_file():
        from unitlens.data.datasets import ImageDataset

        samples = read_parquet(root / SAMPLES, fix=rerecord(root))
        dataset["root"] = str(ImageDataset(samples.drop(columns=["skipped"]), str(dataset.get("spec")), None).root)
        changes.append(f"dataset.root: added ({dataset['root']}, the folder that holds every sample)")
    if data.get("status") == "complete" and "n_nonfinite" not in data and (root / UNITS).is_file():
        units = read_parquet(root / UNITS, fix=rerecord(root))
        if "nonfinite" in units:
            data["n_nonfinite"] = int((units["nonfinite"] > 0).sum())
            changes.append(f"n_nonfinite: added ({data['n_nonfinite']}, from units.parquet)")
    return changes


# version -> the step that turns a manifest of that version into one of the next
STEPS: dict[int, Callable[[dict[str, Any], Path], list[str]]] = {1: _v1_to_v2}


def upgrade_atlas(path: str | Path) -> Upgrade:
    """Rewrite the manifest of the atlas at ``path`` in the current format version.

    Parameters
    ----------
    path
        The atlas folder.

    Returns
    -------
    Upgrade
        The versions, the changes in words (none for an atlas already current) and the backup of the old manifest.
    """
    root = Path(path)
    file = root / MANIFEST
    if not file.is_file():
        raise AtlasError(f"{root} is not an atlas (no {MANIFEST}); create one with unitlens record")
    fix = rerecord(root)
    with writing(root, "atlas upgrade"):
        data = read_json(file, fix=fix)
        text = file.read_text()
        found = version = format_version(data, file, fix)
        if version > FORMAT_VERSION:
            raise AtlasError(f"{file} has format version {version}, written by a newer unitlens; this unitlens "
                             f"reads and writes format versions {READ_AS_IS} to {FORMAT_VERSION}: upgrade unitlens")
        if version == FORMAT_VERSION:
            Manifest.from_dict(data, file, fix)  # refuse a damaged one here too
            return Upgrade(root, found, version)
        changes = []
        while version < FORMAT_VERSION:
            if version not in STEPS:
                raise AtlasError(f"{file} has format version {version}, which this unitlens cannot upgrade (it "
                                 f"upgrades versions {min(STEPS)} to {FORMAT_VERSION}); {fix}")
            changes += STEPS[version](data, root)
            version += 1
        data["format_version"] = version
        changes.append(f"format_version: {found} -> {version}")
        manifest = Manifest.from_dict(data, file, fix)  # a damaged manifest stops here, nothing written
        backup = manifest_backup(root, found)
        if not backup.exists():
            atomic_write(backup, lambda tmp: tmp.write_text(text))
        manifest.write(root)
    return Upgrade(root, found, version, changes, backup)
