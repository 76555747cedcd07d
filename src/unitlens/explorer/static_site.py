"""``write_report(paths, out)``: the explorer's front end as a static folder that opens from ``file://`` or any
static host, without the live parts (text search, image probes and labelling need ``unitlens serve``).

``file://`` pages cannot ``fetch()`` local files, so every payload is a script that hands its JSON to the front
end (``UNITLENS_PUT(key, {...})``), loaded by a ``<script>`` tag when a view needs it::

    index.html  static/  data/catalog.js           the front end and the list of atlases, studies and data files
    data/<atlas>/overview.js  layer/<layer>.js  units/<layer>.js  map/<layer>.js
    data/study/<study>.js
    img/<atlas>/<id>.jpg   figures/<atlas>/...     the thumbnails the pages show, and the atlases' figures
    featviz/<atlas>/<layer>/images/...             the feature visualisations of the layers written

Unit pages hold one MIS task each (the server shows all of them). The folder is written fresh each time; a
non-empty folder that is not an earlier report is refused, and so is a folder inside an atlas.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from unitlens.atlas.files import atomic_write, safe_name
from unitlens.errors import BadInput, Forbidden, MissingFile
from unitlens.explorer.atlas_view import AtlasView
from unitlens.explorer.catalog import Catalog
from unitlens.explorer.options import ReportOptions
from unitlens.explorer.server import ASSETS, index_html
from unitlens.options import takes_options
from unitlens.runtime import Progress

MARKER = ".unitlens-report"
UNIT_CHUNK = 256  # units whose pages are built together (their MIS tasks and similar units in one computation)


@dataclass
class ReportResult:
    out: Path
    atlases: int = 0
    layers: int = 0
    units: int = 0
    images: int = 0
    bytes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def script(key: str, payload) -> str:
    return f"UNITLENS_PUT({json.dumps(key)},{json.dumps(payload, separators=(',', ':'), allow_nan=False)});\n"


class ReportWriter:
    """Writes one report folder; ``files`` maps payload keys to their scripts, ``images`` the thumbnails needed."""

    def __init__(self, catalog: Catalog, out: Path):
        self.catalog = catalog
        self.out = out
        self.files: dict[str, str] = {}
        self.images: dict[str, set[int]] = {}
        self.bytes = 0

    def put(self, key: str, rel: str, payload) -> None:
        text = script(key, payload)
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.files[key] = rel
        self.bytes += len(text)

    def need(self, view: AtlasView, ids) -> None:
        self.images.setdefault(view.name, set()).update(int(i) for i in ids)


def _prepare(out: Path, catalog: Catalog) -> None:
    for view in catalog.atlases.values():
        root = view.path.resolve()
        if out.resolve() == root or root in out.resolve().parents:
            raise BadInput(f"--out {out} is inside atlas {view.path}; write the report somewhere else (the "
                           "explorer writes nothing into an atlas but its cache)")
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise BadInput(f"--out {out} is not empty and holds no earlier report; give an empty or new folder")
        for name in ("data", "img", "figures", "static", "featviz"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by unitlens report; this folder is replaced by the next report here\n")


def _unit_ids(page: dict) -> list[int]:
    ids = list(page["top"]["ids"]) + list(page["bottom"]["ids"])
    for task in (page["mis"] or {}).get("tasks", []):
        ids += [*task["pos_expl"], *task["neg_expl"], task["pos_query"], task["neg_query"]]
    lens = page["lens"] or {}
    ids += [e["id"] for e in lens.get("examples", [])]
    for group in ("layer", "atlas"):
        ids += [c["top_id"] for c in (lens.get("similar") or {}).get(group, [])]
    for cls in page["relevance"]["classes"]:
        ids += cls["top_ids"]
    return ids


@takes_options(ReportOptions)
def write_report(paths: list, out: str | Path, options: ReportOptions | None = None, *,
                 progress: bool = True) -> ReportResult:
    """Write the explorer of atlases and study folders as a static folder that opens from ``file://``.

    Parameters
    ----------
    paths
        Atlas folders and/or study folders.
    out
        The folder to write: new, empty, or an earlier report (which is replaced).
    options
        Which layers get pages (``ReportOptions``; keyword arguments override its fields).
    progress
        Show a progress bar.

    Returns
    -------
    ReportResult
        What was written: counts of atlases, layers, unit pages and thumbnails, bytes, seconds, and notes.
    """
    assert options is not None  # takes_options fills it
    layers = options.layers
    start = time.perf_counter()
    out = Path(out)
    catalog = Catalog(paths)
    _prepare(out, catalog)
    writer = ReportWriter(catalog, out)
    result = ReportResult(out)
    dirs = {name: safe_name(name, default="atlas") for name in catalog.atlases}
    selected = {}
    for name, view in catalog.atlases.items():
        if view.atlas.complete:
            selected[name] = [i.name for i in view.atlas.select_layers(layers)]
        else:
            selected[name] = []
            result.notes.append(f"atlas {name}: the record run has not finished; only its overview is written")
    total_units = sum(view.n_units(layer) for name, view in catalog.atlases.items() for layer in selected[name])
    with Progress("report", total_units, progress, unit="unit") as bar:
        for name, view in catalog.atlases.items():
            base = f"data/{dirs[name]}"
            overview = view.overview()
            writer.put(f"atlas/{name}", f"{base}/overview.js", overview)
            for figure in overview["figures"]:
                target = out / "figures" / dirs[name] / figure
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(view.figures()[figure], target)
            for layer in selected[name]:
                bar.describe(f"report {name} {layer}")
                stem = safe_name(layer, default="layer")
                payload = view.layer(layer)
                writer.put(f"atlas/{name}/layer/{layer}", f"{base}/layer/{stem}.js", payload)
                writer.need(view, payload["columns"]["top_id"])
                if payload["embedded"]:
                    writer.put(f"atlas/{name}/layer/{layer}/map", f"{base}/map/{stem}.js", view.layer_map(layer))
                if payload.get("featviz"):
                    for file, path in view.featviz_files(layer).items():
                        target = out / "featviz" / dirs[name] / payload["featviz"]["folder"] / file
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, target)
                        writer.bytes += path.stat().st_size
                pages = []
                n = payload["n_units"]
                for first in range(0, n, UNIT_CHUNK):
                    chunk = view.units_of(layer, list(range(first, min(n, first + UNIT_CHUNK))), n_tasks=1)
                    for page in chunk:
                        writer.need(view, _unit_ids(page))
                        similar = (page["lens"] or {}).get("similar") or {}
                        for peer in similar.get("peers", []):
                            writer.need(catalog.atlas(peer["atlas"]), [c["top_id"] for c in peer["units"]])
                    pages += chunk
                    bar.advance(len(chunk))
                writer.put(f"atlas/{name}/layer/{layer}/units", f"{base}/units/{stem}.js", pages)
                result.layers += 1
                result.units += n
            result.atlases += 1
        for name, study in catalog.studies.items():
            writer.put(f"study/{name}", f"data/study/{safe_name(name, default='study')}.js", study.payload())
            for figure, path in study.figures.items():
                target = out / "figures" / "study" / safe_name(name, default="study") / figure
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    n_images = sum(len(v) for v in writer.images.values())
    with Progress("report thumbnails", n_images, progress, unit="img") as bar:
        for name, ids in writer.images.items():
            view = catalog.atlas(name)
            folder = out / "img" / dirs[name]
            folder.mkdir(parents=True, exist_ok=True)
            left_out = []
            for sid in sorted(ids):
                bar.advance()
                try:
                    data = view.thumbnails.data(sid)
                except (Forbidden, MissingFile) as err:  # not one of the dataset's images as recorded, or gone
                    left_out.append(str(err))
                    continue
                (folder / f"{sid}.jpg").write_bytes(data)
                writer.bytes += len(data)
            if left_out:
                result.notes.append(f"atlas {name}: {len(left_out)} thumbnail(s) left out, e.g. {left_out[0]}")
    result.images = n_images
    catalog_payload = {**catalog.payload(), "mode": "static", "live": False, "files": writer.files,
                       "thumbs": {name: f"img/{d}/{{id}}.jpg" for name, d in dirs.items()},
                       "featviz": {name: f"featviz/{d}/" for name, d in dirs.items()},
                       "figures": {**{f"atlas/{name}": f"figures/{d}/" for name, d in dirs.items()},
                                   **{f"study/{name}": f"figures/study/{safe_name(name, default='study')}/"
                                      for name in catalog.studies}},
                       "written": time.strftime("%Y-%m-%d %H:%M")}
    text = "window.UNITLENS_STATIC = " + json.dumps(catalog_payload, separators=(",", ":"), allow_nan=False) + ";\n"
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "catalog.js").write_text(text)
    shutil.copytree(ASSETS, out / "static", ignore=shutil.ignore_patterns("index.html"))
    atomic_write(out / "index.html", lambda tmp: tmp.write_text(index_html('<script src="data/catalog.js"></script>')))
    result.bytes = writer.bytes + len(text)
    result.seconds = time.perf_counter() - start
    return result
