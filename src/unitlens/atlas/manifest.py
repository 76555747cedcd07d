"""``Manifest``: the typed contents of an atlas's ``manifest.json``, with its format version.

The record pass writes the manifest (status ``recording``, then ``complete``); adding or removing derived layers
rewrites it. Every reader goes through ``Manifest.read``, which checks the format version first:

- the current version (``FORMAT_VERSION``) reads;
- an older version from ``READ_AS_IS`` on reads as is, the fields it lacks taking their documented defaults
  (a manifest without ``format_version`` is version 1, written before versions were kept);
- an older one that cannot be read as is is refused with the command that upgrades it
  (``unitlens atlas upgrade PATH``, see ``unitlens.atlas.upgrade``), and a newer one, written by a newer unitlens,
  with "upgrade unitlens".

A manifest that is not JSON, lacks a required field or has one of the wrong shape is a ``CorruptFile``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitlens.atlas.files import read_json, write_json
from unitlens.atlas.layout import MANIFEST
from unitlens.errors import AtlasError, CorruptFile
from unitlens.zoo.units import LayerInfo

if TYPE_CHECKING:
    import pandas as pd

FORMAT_VERSION = 2  # 2: format_version, options, dataset.root, n_nonfinite
READ_AS_IS = 1  # the oldest version read without an upgrade


@dataclass(frozen=True)
class RecordConfig:
    """Everything that determines an atlas's content (``manifest["config"]``); a resumed run must match it."""

    model: str  # the model as named to the record pass (a zoo name, a tagged timm name, a saved module file)
    weights: str  # "pretrained", "random", a checkpoint path, or the saved module file itself
    seed: int | None  # the seed random weights were drawn with
    weights_hash: str  # SHA-256 of every parameter and buffer
    dataset: str  # the dataset as named to the record pass
    dataset_fingerprint: str
    n_samples: int
    layers: tuple[str, ...]  # the recorded layers (derived layers are not part of the record run)
    k: int
    spatial: str
    tokens: str
    tie_seed: int
    content_hash: bool = False  # False: fingerprint of paths and sizes (the only kind before content hashes)
    model_options: Mapping[str, Any] = field(default_factory=dict)  # what rebuilds the model (num_classes, ...)

    def as_dict(self) -> dict:
        """The JSON form (``model_options`` only when there are some, as the record pass always wrote it)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["layers"] = list(self.layers)
        out["model_options"] = dict(self.model_options)
        if not self.model_options:
            del out["model_options"]
        return out


@dataclass(frozen=True)
class DatasetRecord:
    """The recorded images (``manifest["dataset"]``): as named, fingerprint, count and the folder holding them."""

    spec: str
    fingerprint: str
    n: int
    root: str | None = None  # None: recorded before the root was kept (the samples' common folder stands in)

    def as_dict(self) -> dict:
        return {"spec": self.spec, "fingerprint": self.fingerprint, "n": self.n,
                **({"root": self.root} if self.root is not None else {})}


@dataclass(frozen=True)
class Manifest:
    """An atlas's manifest. Read it with ``Manifest.read(root)``; change it with ``dataclasses.replace`` and
    ``write(root)`` (atomic). The counts and ``seconds`` are set when the record run completes."""

    status: str  # "recording" or "complete"
    config: RecordConfig
    dataset: DatasetRecord
    layers: tuple[LayerInfo, ...]  # recorded layers, and derived layers after their parent
    versions: Mapping[str, str] = field(default_factory=dict)  # library versions of the record run
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # step -> its options (as_dict)
    derived_layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # name -> where it came from
    n_images: int | None = None
    n_skipped: int | None = None
    n_units: int | None = None
    n_constant: int | None = None
    n_nonfinite: int | None = None  # None: recorded before non-finite units were counted
    seconds: float | None = None
    format_version: int = FORMAT_VERSION

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def recorded_layers(self) -> list[str]:
        """The names of the layers the record run recorded (not the derived ones)."""
        return [info.name for info in self.layers if info.name not in self.derived_layers]

    def counted(self, units: pd.DataFrame) -> Manifest:
        """This manifest with the unit counts of a units table (``units.parquet``): units, constant ones,
        non-finite ones."""
        return dataclasses.replace(self, n_units=len(units), n_constant=int(units["constant"].sum()),
                                   n_nonfinite=int((units["nonfinite"] > 0).sum()))

    def as_dict(self) -> dict:
        """The JSON form of ``manifest.json`` (counts not known yet are left out)."""
        out: dict[str, Any] = {"format_version": self.format_version, "status": self.status,
                               "config": self.config.as_dict(), "dataset": self.dataset.as_dict(),
                               "layers": [info.as_dict() for info in self.layers], "versions": dict(self.versions),
                               "options": {k: dict(v) for k, v in self.options.items()}}
        if self.derived_layers:
            out["derived_layers"] = {k: dict(v) for k, v in self.derived_layers.items()}
        for name in ("n_images", "n_skipped", "n_units", "n_constant", "n_nonfinite", "seconds"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def write(self, root: str | Path) -> None:
        """Write ``<root>/manifest.json`` atomically."""
        write_json(Path(root) / MANIFEST, self.as_dict())

    @classmethod
    def read(cls, root: str | Path, fix: str | None = None) -> Manifest:
        """The manifest of the atlas at ``root``, its format version checked (see the module docstring);
        ``fix`` says how to rebuild a damaged one."""
        path = Path(root) / MANIFEST
        data = read_json(path, fix=fix)
        version = format_version(data, path, fix)
        if version > FORMAT_VERSION:
            raise AtlasError(f"{path} has format version {version}, written by a newer unitlens; this unitlens "
                             f"reads format versions {READ_AS_IS} to {FORMAT_VERSION}: upgrade unitlens")
        if version < READ_AS_IS:
            raise AtlasError(f"{path} has format version {version}, older than this unitlens reads (versions "
                             f"{READ_AS_IS} to {FORMAT_VERSION}); upgrade the atlas with: unitlens atlas upgrade "
                             f"{Path(root)}")
        return cls.from_dict(data, path, fix)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path, fix: str | None = None) -> Manifest:
        """A manifest from its JSON form (``path`` and ``fix`` name a damaged one); a version-1 manifest gets the
        defaults of the fields it lacks, its version kept."""
        def damaged(what: str) -> CorruptFile:
            return CorruptFile(f"{path} {what}" + (f"; {fix}" if fix else ""))

        missing = [k for k in ("status", "layers", "config", "dataset") if k not in data]
        if missing:
            raise damaged(f"has no {', '.join(missing)}")
        layers = data["layers"]
        if not isinstance(layers, list) or not all(isinstance(d, dict) and isinstance(d.get("name"), str)
                                                   for d in layers):
            raise damaged("has a malformed layer list")
        try:
            infos = tuple(LayerInfo(**d) for d in layers)
        except TypeError as err:  # missing or unknown fields
            raise damaged(f"has a malformed layer entry ({err})") from err
        config, dataset = data["config"], data["dataset"]
        if not isinstance(config, dict) or not isinstance(dataset, dict):
            raise damaged("has a malformed config or dataset entry (not a JSON object)")
        try:
            record = RecordConfig(**{**config, **({"layers": tuple(config["layers"])} if "layers" in config else {})})
            images = DatasetRecord(**dataset)
        except TypeError as err:  # missing or unknown fields
            raise damaged(f"has a malformed config or dataset entry ({err})") from err
        known = {f.name for f in dataclasses.fields(cls)} - {"config", "dataset", "layers"}
        unknown = sorted(set(data) - known - {"config", "dataset", "layers"})
        if unknown:
            raise damaged(f"has unknown field(s) {', '.join(unknown)}")
        rest = {k: data[k] for k in known if k in data}
        rest["format_version"] = format_version(data, path, fix)
        return cls(config=record, dataset=images, layers=infos, **rest)

def format_version(data: Mapping[str, Any], path: Path, fix: str | None = None) -> int:
    """The format version of a manifest's JSON form: 1 when it has none (written before versions were kept)."""
    version = data.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise CorruptFile(f"{path} has format version {version!r}, not a whole number" + (f"; {fix}" if fix else ""))
    return version
