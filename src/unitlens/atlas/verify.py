"""``verify_atlas(path)``: check that every file of an atlas can be read and that its parts agree.

What is checked (each finding names the file, the check, ``ok`` / ``warning`` / ``error`` and a detail):

- ``manifest.json`` parses and has its keys; the record run has finished;
- ``units.parquet``: readable, one row per unit 0..width-1 of every recorded layer, no other layers;
- ``samples.parquet``: readable, ids 0..n-1, as many as the manifest says;
- ``exemplars/<layer>.safetensors``: readable, four (units, k) arrays with units = the layer's rows in the units
  table and k at most the recorded k, sample ids in range and not of skipped samples, values sorted;
- derived results (scores, lens, relevance, audit, embeddings, and any other registered folder): every JSON,
  Parquet and safetensors file readable, identity stamps (JSON ``atlas``, Parquet schema metadata) equal to this
  atlas's, scores only of this atlas's layers and units, lens layers as wide as the recorded layers, embedding
  index naming existing shards;
- the images (``images=True``): every sample file still there, and, where the atlas holds content hashes, the
  bytes of files whose size or times changed still hash to the recorded value.

It reads everything but loads no model; ``unitlens atlas verify ATLAS`` prints the findings and exits with status
1 when one is an error.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens.atlas.advice import rerecord_layer
from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import parquet_stamp, read_json, read_parquet, read_tensor_metadata, read_tensors
from unitlens.atlas.layout import DERIVED, DERIVED_SEPARATOR, EXEMPLARS, MANIFEST, RECORD_STATE, SAMPLES, UNITS
from unitlens.atlas.options import VerifyOptions
from unitlens.data.hashing import file_digest
from unitlens.errors import UnitlensError
from unitlens.options import takes_options

OK, WARNING, ERROR = "ok", "warning", "error"
NAMED = 5  # files named in one finding before the rest are counted


@dataclass
class Verification:
    """The findings of ``verify_atlas``: one row per (file, check): area, file, check, status, detail."""

    path: Path
    findings: pd.DataFrame

    @property
    def ok(self) -> bool:
        return not (self.findings["status"] == ERROR).any()

    @property
    def errors(self) -> pd.DataFrame:
        return self.findings[self.findings["status"] == ERROR].reset_index(drop=True)

    def table(self) -> pd.DataFrame:
        """Errors and warnings one per row, then one row per area whose checks all passed (with their count)."""
        f = self.findings
        bad = f[f["status"] != OK][["file", "check", "status", "detail"]]
        good = f[f["status"] == OK]
        rows = []
        for area, g in good.groupby("area", sort=False):
            if (f.loc[f["area"] == area, "status"] != OK).all():
                continue
            files = g["file"].unique()
            rows.append({"file": files[0] if len(files) == 1 else f"{area}/ ({len(files)} files)",
                         "check": ", ".join(dict.fromkeys(g["check"])), "status": OK,
                         "detail": "; ".join(d for d in dict.fromkeys(g["detail"]) if d)[:200]})
        return pd.concat([bad, pd.DataFrame(rows, columns=bad.columns)], ignore_index=True)


@dataclass
class _Checker:
    root: Path
    rows: list[dict] = field(default_factory=list)

    def add(self, area: str, file: str | Path, check: str, status: str, detail: str = "") -> None:
        path = Path(file)
        name = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(file)
        self.rows.append({"area": area, "file": name, "check": check, "status": status, "detail": detail})

    def attempt(self, area: str, file: Path, check: str, read: Callable[[], object]):
        """``read()``, recording an error finding (and returning None) if it raises."""
        try:
            return read()
        except (UnitlensError, OSError, ValueError, KeyError, TypeError) as err:
            self.add(area, file, check, ERROR, str(err))
            return None


@takes_options(VerifyOptions)
def verify_atlas(path: str | Path, options: VerifyOptions | None = None) -> Verification:
    """Check every file of the atlas at ``path`` (see the module docstring); never raises for what it finds.

    Parameters
    ----------
    path
        The atlas folder.
    options
        What else to check (``VerifyOptions``; keyword arguments override its fields).

    Returns
    -------
    Verification
        Every finding (errors, warnings, passed checks) with the file and the command that redoes it.
    """
    assert options is not None  # takes_options fills it
    images = options.images
    root = Path(path)
    c = _Checker(root)
    if not (root / MANIFEST).is_file():
        c.add("manifest", root / MANIFEST, "exists", ERROR, f"{root} is not an atlas (no {MANIFEST}); create one "
              "with unitlens record")
        return _done(root, c)
    atlas = c.attempt("manifest", root / MANIFEST, "readable", lambda: Atlas(root))
    if atlas is None:
        return _done(root, c)
    layers = c.attempt("manifest", root / MANIFEST, "layers", lambda: atlas.layers)
    if layers is None:
        return _done(root, c)
    c.add("manifest", root / MANIFEST, "readable", OK, f"{len(layers)} layers, status {atlas.manifest.status}")
    if not atlas.complete:
        c.add("manifest", root / MANIFEST, "record finished", WARNING,
              f"status {atlas.manifest.status}: the record run has not finished; run the same unitlens record "
              "command again to resume it")
        state = root / RECORD_STATE
        if state.is_file() and \
                c.attempt("record state", state, "readable", lambda: read_tensor_metadata(state)) is not None:
            c.add("record state", state, "readable", OK)
        return _done(root, c)
    if (root / RECORD_STATE).is_file():
        c.add("record state", root / RECORD_STATE, "left over", WARNING,
              "a checkpoint of a finished run; it is not used and can be deleted")
    units = _units(c, atlas, layers)
    samples = _samples(c, atlas)
    _exemplars(c, atlas, layers, units, samples)
    _derived(c, atlas)
    if images and samples is not None:
        _images(c, atlas, samples)
    return _done(root, c)


def _done(root: Path, c: _Checker) -> Verification:
    return Verification(root, pd.DataFrame(c.rows, columns=["area", "file", "check", "status", "detail"]))


# ------------------------------------------------------------------------------------------ core files
def _core_table(c: _Checker, atlas: Atlas, area: str, name: str, columns: set[str]) -> pd.DataFrame | None:
    """A core Parquet file of the atlas, when it reads and has ``columns`` (else None, with the error added)."""
    path = atlas.path / name
    table = c.attempt(area, path, "readable", lambda: read_parquet(path, fix=atlas.rerecord))
    if table is None:
        return None
    missing = columns - set(table.columns)
    if missing:
        c.add(area, path, "columns", ERROR, f"no column(s) {', '.join(sorted(missing))}; {atlas.rerecord}")
        return None
    return table


def _units(c: _Checker, atlas: Atlas, layers) -> pd.DataFrame | None:
    path = atlas.path / UNITS
    units = _core_table(c, atlas, "units", UNITS, {"layer", "unit", "constant"})
    if units is None:
        return None
    problems: dict[str, list[str]] = {}  # the fix -> what it fixes: a derived layer is recorded again alone
    recorded = {info.name for info in layers}
    for layer in sorted(set(units["layer"]) - recorded):
        fix = (f"record that basis again, which replaces them: unitlens basis record {atlas.path} '{layer}' --force"
               if DERIVED_SEPARATOR in layer else atlas.rerecord)
        problems.setdefault(fix, []).append(f"rows of layer {layer}, which the manifest does not list")
    by_layer = units.groupby("layer", sort=False)["unit"].apply(np.asarray).to_dict()  # one pass, not one per layer
    for info in layers:
        got = np.sort(by_layer.get(info.name, np.empty(0, dtype=np.int64)))
        width = info.width if info.width is not None else len(got)
        if not np.array_equal(got, np.arange(width)):
            problems.setdefault(rerecord_layer(atlas.path, atlas.manifest, info.name), []).append(
                f"layer {info.name}: {len(got)} rows, expected units 0..{width - 1}")
    for fix, found in problems.items():
        shown = "; ".join(found[:NAMED]) + (f"; and {len(found) - NAMED} more" if len(found) > NAMED else "")
        c.add("units", path, "one row per unit", ERROR, f"{shown}; {fix}")
    if not problems:
        c.add("units", path, "one row per unit", OK, f"{len(units)} units")
    return units


def _samples(c: _Checker, atlas: Atlas) -> pd.DataFrame | None:
    path = atlas.path / SAMPLES
    samples = _core_table(c, atlas, "samples", SAMPLES, {"id", "path", "skipped"})
    if samples is None:
        return None
    want = atlas.manifest.n_images if atlas.manifest.n_images is not None else atlas.manifest.config.n_samples
    if not np.array_equal(samples["id"].to_numpy(), np.arange(len(samples))):
        c.add("samples", path, "ids", ERROR, f"ids are not 0..{len(samples) - 1} in order; {atlas.rerecord}")
    elif want is not None and int(want) != len(samples):
        c.add("samples", path, "ids", ERROR, f"{len(samples)} samples, the manifest says {want}; {atlas.rerecord}")
    else:
        hashed = "content_hash" in samples
        c.add("samples", path, "ids", OK, f"{len(samples)} samples, {int(samples['skipped'].sum())} skipped"
              + ("" if hashed else "; no content hashes (recorded before them or with --no-content-hash)"))
    return samples


def _exemplars(c: _Checker, atlas: Atlas, layers, units: pd.DataFrame | None, samples: pd.DataFrame | None) -> None:
    k_max = atlas.manifest.config.k
    n = len(samples) if samples is not None else None
    skipped = set(samples.loc[samples["skipped"].astype(bool), "id"].tolist()) if samples is not None else set()
    counts = units["layer"].value_counts().to_dict() if units is not None else None
    for info in layers:
        path = atlas.exemplar_file(info.name)
        ex = c.attempt("exemplars", path, "readable", lambda: atlas.exemplars(info.name))  # noqa: B023
        if ex is None:
            continue
        C, k = ex.top_ids.shape
        problems = []
        rows = int(counts.get(info.name, 0)) if counts is not None else None
        if rows is not None and rows != C:
            problems.append(f"{C} units, the units table has {rows}")
        if k_max is not None and k > int(k_max):
            problems.append(f"k = {k}, more than the recorded k = {k_max}")
        ids = np.concatenate([ex.top_ids.numpy().ravel(), ex.bottom_ids.numpy().ravel()])
        if n is not None and ids.size and (ids.min() < 0 or ids.max() >= n):
            problems.append(f"sample ids {int(ids.min())}..{int(ids.max())} outside 0..{n - 1}")
        elif skipped and np.isin(ids, list(skipped)).any():
            problems.append("ids of skipped (unreadable) samples")
        top, bottom = ex.top_vals.numpy(), ex.bottom_vals.numpy()
        with np.errstate(invalid="ignore"):
            if k > 1 and ((np.diff(top, axis=1) > 0).any() or (np.diff(bottom, axis=1) < 0).any()):
                problems.append("values not sorted (top descending, bottom ascending)")
        if problems:
            c.add("exemplars", path, "shapes, ids, order", ERROR,
                  "; ".join(problems) + f"; {rerecord_layer(atlas.path, atlas.manifest, info.name)}")
        else:
            c.add("exemplars", path, "shapes, ids, order", OK, "(units, k) as the units table, ids in range")
    recorded = {atlas.exemplar_file(info.name).name for info in layers}
    for extra in sorted(p for p in (atlas.path / EXEMPLARS).glob("*.safetensors") if p.name not in recorded):
        c.add("exemplars", extra, "listed", WARNING, "a layer the manifest does not list; it is not used and can be "
                                                     "deleted")


# ------------------------------------------------------------------------------------------ derived results
def _identity(c: _Checker, atlas: Atlas, area: str, path: Path, stamp: dict | None, fix: str) -> None:
    if stamp is None:
        return
    try:
        atlas.check_identity(stamp, str(path), fix)
    except UnitlensError as err:
        c.add(area, path, "belongs to this atlas", ERROR, str(err))
        return
    c.add(area, path, "belongs to this atlas", OK)


def _derived(c: _Checker, atlas: Atlas) -> None:
    for d in DERIVED.values():
        base = atlas.path / d.path
        if not base.exists():
            continue
        if d.name == "scores":
            _scores(c, atlas, base)
            continue
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if any(part.endswith(".lancedb") for part in path.relative_to(atlas.path).parts):
                continue  # LanceDB's own files; the lens layer files hold the same vectors
            _derived_file(c, atlas, d.name, path, atlas.redo(path))
        if d.name == "embeddings":
            for meta in sorted(base.glob("*/meta.json")):
                _embedding_index(c, meta.parent)


def _scores(c: _Checker, atlas: Atlas, path: Path) -> None:
    """scores.parquet readable and of this atlas; rows of derived layers it no longer has are a warning (they are
    ignored, and dropped at the next score write), not a reason to distrust the other layers' scores."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the left-over rows are a finding of their own below
        frame = c.attempt("scores", path, "readable, belongs to this atlas", lambda: atlas.scores())
    if frame is None:
        return
    c.add("scores", path, "readable, belongs to this atlas", OK, f"{len(frame)} rows")
    gone = atlas.removed_layers(read_parquet(path, columns=["layer"])["layer"])
    if gone:
        c.add("scores", path, "layers listed", WARNING,
              f"rows of derived layer(s) {', '.join(gone[:NAMED])} that the atlas no longer has (a removal that did "
              "not finish); they are ignored, and dropped the next time scores are written (unitlens mis "
              f"{atlas.path} --layers LAYER, for any layer)")


def _derived_file(c: _Checker, atlas: Atlas, area: str, path: Path, fix: str) -> None:
    suffix = path.suffix
    if suffix == ".json":
        meta = c.attempt(area, path, "readable", lambda: read_json(path, fix=fix))
        if meta is not None:
            c.add(area, path, "readable", OK)
            _identity(c, atlas, area, path, meta.get("atlas") if isinstance(meta.get("atlas"), dict) else None, fix)
    elif suffix == ".parquet":
        frame = c.attempt(area, path, "readable", lambda: read_parquet(path, fix=fix))
        if frame is not None:
            c.add(area, path, "readable", OK)
            _identity(c, atlas, area, path, parquet_stamp(path), fix)
    elif suffix == ".safetensors":
        detail = "; it is dropped and embedded again on next use" if area == "embeddings" else ""
        tensors = c.attempt(area, path, "readable", lambda: read_tensors(path, fix=fix + detail))
        if tensors is None:
            return
        c.add(area, path, "readable", OK)
        layer = read_tensor_metadata(path).get("layer")
        if "theta" in tensors and layer is not None:
            try:
                width = atlas.layer(layer).width
            except UnitlensError:
                c.add(area, path, "layer", ERROR, f"vectors of layer '{layer}', which this atlas does not have; {fix}")
                return
            if width is not None and tensors["theta"].shape[0] != width:
                c.add(area, path, "layer", ERROR, f"{tensors['theta'].shape[0]} unit vectors of layer '{layer}', "
                      f"which has {width} units here; {fix}")


def _embedding_index(c: _Checker, folder: Path) -> None:
    index_path = folder / "index.parquet"
    if not index_path.is_file():
        return
    try:
        index = read_parquet(index_path)
    except UnitlensError:
        return  # reported as unreadable already
    shards = set(index["shard"].astype(str)) if "shard" in index else set()
    lost = sorted(s for s in shards if not (folder / s).is_file())
    if lost:
        c.add("embeddings", index_path, "shards exist", WARNING, f"{len(lost)} listed shard(s) are gone (e.g. "
              f"{lost[0]}); their embeddings are made again on next use")


# ------------------------------------------------------------------------------------------ images
def _images(c: _Checker, atlas: Atlas, samples: pd.DataFrame) -> None:
    missing, changed, checked = [], [], 0
    hashed = "content_hash" in samples
    for row in samples.itertuples(index=False):
        path = Path(row.path)
        if not path.is_file():
            if not bool(row.skipped):
                missing.append(str(path))
            continue
        if not hashed or not isinstance(row.content_hash, str):
            continue
        st = path.stat()
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (row.file_bytes, row.file_mtime_ns, row.file_ctime_ns):
            continue
        checked += 1
        try:
            if file_digest(path) != row.content_hash:
                changed.append(str(path))
        except OSError:
            missing.append(str(path))
    spec = atlas.manifest.dataset.spec
    for what, paths, fix in (
            ("exist", missing, "restore them (or record the atlas again with the data as it is now)"),
            ("bytes as recorded", changed, f"restore them, or record again: unitlens record --data {spec} --out "
                                           f"{atlas.path} --force (the exemplars are of the old images)")):
        if paths:
            shown = ", ".join(paths[:NAMED]) + (f" and {len(paths) - NAMED} more" if len(paths) > NAMED else "")
            c.add("images", f"{len(paths)} image(s)", what, ERROR, f"{shown}; {fix}")
    if not missing and not changed:
        note = f"{len(samples)} files present" + (f", {checked} with new times re-hashed: unchanged" if checked else "")
        c.add("images", atlas.manifest.dataset.spec, "exist, bytes as recorded", OK,
              note + ("" if hashed else " (no content hashes to compare)"))

