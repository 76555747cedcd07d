"""``Catalog(paths)``: the atlases and studies one explorer shows, each under a unique name.

A path is an atlas (it has ``manifest.json``) or a study folder (``study.toml``/``study.json``/``study.parquet``,
atlases under ``atlases/``); anything else is refused before the server starts. An atlas is named after its
folder; two atlases whose folders share a name get ``-2``, ``-3``, ... in the order given.
"""
from __future__ import annotations

from pathlib import Path

from unitlens.atlas.layout import MANIFEST
from unitlens.errors import AtlasError, CorruptFile, MissingFile, NotFound, UnitlensError
from unitlens.explorer.atlas_view import AtlasView
from unitlens.explorer.study_view import StudyView, is_study


def unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... : the first that is not in ``taken`` (which it is added to)."""
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    taken.add(out)
    return out


def open_view(path: Path, name: str, study: str | None = None) -> AtlasView:
    try:
        return AtlasView(path, name, study=study)
    except (ValueError, OSError) as err:  # a damaged manifest
        raise CorruptFile(f"{path / MANIFEST} cannot be read ({err}); record the atlas again") from err


class Catalog:
    """``atlases`` and ``studies`` by name; ``atlas(name)`` / ``study(name)`` raise ``NotFound`` for others."""

    def __init__(self, paths: list[str | Path]):
        if not paths:
            raise MissingFile("give at least one atlas or study folder")
        self.atlases: dict[str, AtlasView] = {}
        self.studies: dict[str, StudyView] = {}
        names: set[str] = set()
        study_names: set[str] = set()
        seen: dict[Path, str] = {}  # resolved atlas folder -> its name (an atlas given twice is served once)
        for given in paths:
            path = Path(given).expanduser()
            if not path.exists():
                raise MissingFile(f"{given} does not exist; give an atlas folder (unitlens record --out) or a study "
                                  "folder (unitlens study run --out)")
            if (path / MANIFEST).is_file():
                if path.resolve() not in seen:
                    name = unique(path.resolve().name, names)
                    self.atlases[name] = open_view(path, name)
                    seen[path.resolve()] = name
            elif is_study(path):
                if any(s.path.resolve() == path.resolve() for s in self.studies.values()):
                    continue
                study = StudyView(path, unique(path.resolve().name, study_names))
                self.studies[study.name] = study
                for entry, folder in study.atlas_folders().items():
                    if folder.resolve() not in seen:
                        name = unique(entry, names)
                        self.atlases[name] = open_view(folder, name, study=study.name)
                        seen[folder.resolve()] = name
                    study.atlas_names[entry] = seen[folder.resolve()]
            else:
                raise AtlasError(f"{given} is neither an atlas (no {MANIFEST}) nor a study folder (no study.toml, "
                                 "study.json or study.parquet); make an atlas with unitlens record, a study with "
                                 "unitlens study run")
        for view in self.atlases.values():
            view.peers = [v for v in self.atlases.values() if v is not view]

    def atlas(self, name: str) -> AtlasView:
        if name not in self.atlases:
            raise NotFound(f"no atlas named '{name}' here; the explorer serves {', '.join(self.atlases) or 'none'}")
        return self.atlases[name]

    def study(self, name: str) -> StudyView:
        if name not in self.studies:
            raise NotFound(f"no study named '{name}' here; the explorer serves {', '.join(self.studies) or 'none'}")
        return self.studies[name]

    def warm(self) -> None:
        """Read every atlas's tables and overview now (the server does it in the background at start)."""
        for view in self.atlases.values():
            try:
                view.overview()
            except UnitlensError:
                pass  # shown to whoever opens that atlas

    def payload(self) -> dict:
        """The list the home page shows."""
        atlases = []
        for view in self.atlases.values():
            m = view.atlas.manifest
            atlases.append({"name": view.name, "path": str(view.path), "model": m.config.model,
                            "data": m.config.dataset, "status": m.status, "units": m.n_units,
                            "layers": len(m.layers), "study": view.study})
        studies = [{"name": s.name, "title": s.title, "path": str(s.path), "atlases": len(s.atlas_names)}
                   for s in self.studies.values()]
        return {"atlases": atlases, "studies": studies}
