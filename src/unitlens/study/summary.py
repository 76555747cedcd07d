"""``summarize(folder)``: the study table, one row per entry, computed from the entries' atlases.

Columns: entry, model, weights (pretrained / random / checkpoint), checkpoint, epoch, accuracy and where it came
from, status (and the failed step and its error), layers, units, constant units, and where computed: the MIS
backend, scored units, MIS mean / 5th / 95th percentile / mean of the worst 5 % of units (the ⌈0.05·n⌉ lowest),
mean MIS accuracy (the 2-AFC task accuracy, not the model's), the lens backend with clarity, polysemanticity and
redundancy means (redundancy: mean over layers), where the featviz step ran the MIS of feature visualisations
beside natural-exemplar MIS on the same units (both means, their mean paired difference and the share of units
visualisations make more predictable), and the seconds of each step. A result is shown only when its step
is done with the study file as it is now (a step to redo shows nothing until it is). An entry the study file no longer
has is listed with status ``removed`` (its atlas is kept).

``study.parquet`` carries a stamp in its schema metadata (``{"kind": "study table", "study": <name>}``, like the
identity stamps of an atlas's derived results): ``read_table`` refuses a damaged file, or a table that is not this
study's, with a ``CorruptFile`` naming it and the command that rewrites it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens.atlas import Atlas
from unitlens.atlas.files import parquet_stamp, read_parquet, write_parquet
from unitlens.errors import CorruptFile, UnitlensError
from unitlens.study.defaults import WORST_SHARE
from unitlens.study.folder import StudyFolder, entry_status

STEP_SECONDS = ("record", "accuracy", "mis", "lens", "featviz")
KIND = "study table"


def worst_mean(values: np.ndarray, share: float = WORST_SHARE) -> float:
    """Mean of the ⌈share·n⌉ lowest values (NaN for none)."""
    values = np.sort(values[np.isfinite(values)])
    if len(values) == 0:
        return float("nan")
    return float(values[: max(1, math.ceil(share * len(values)))].mean())


def scored_backend(atlas: Atlas, metric: str, preferred: str | None) -> str | None:
    """The backend whose ``metric`` scores to use: ``preferred`` if the atlas has it, else its only one."""
    scores = atlas.scores()
    names = sorted(scores.loc[scores["metric"] == metric, "backend"].unique())
    if preferred in names:
        return preferred
    return names[0] if len(names) == 1 else None


def mis_summary(atlas: Atlas, backend: str | None) -> dict:
    """MIS columns of one atlas (empty when it has no MIS of ``backend``)."""
    from unitlens.mis.scoring import STATUS_SCORED, load_scores

    name = scored_backend(atlas, "mis", backend)
    if name is None:
        return {}
    frame = load_scores(atlas, name)
    scored = frame[frame["status"] == STATUS_SCORED]
    v = scored["mis"].to_numpy(dtype=float)
    some = len(v) > 0
    return {"mis_backend": name, "mis_units": len(v),
            "mis_mean": float(v.mean()) if some else np.nan,
            "mis_p5": float(np.quantile(v, 0.05)) if some else np.nan,
            "mis_p95": float(np.quantile(v, 0.95)) if some else np.nan,
            "mis_worst5": worst_mean(v),
            "mis_accuracy": float(scored["mis_accuracy"].mean()) if some else np.nan}


def lens_summary(atlas: Atlas, backend: str | None) -> dict:
    """Clarity / polysemanticity means over units and the mean per-layer redundancy of one atlas."""
    name = scored_backend(atlas, "clarity", backend)
    if name is None:
        return {}
    scores = atlas.scores()
    mine = scores[scores["backend"] == name]
    out: dict[str, str | float] = {"lens_backend": name}
    for metric in ("clarity", "polysemanticity"):
        out[f"{metric}_mean"] = float(mine.loc[mine["metric"] == metric, "value"].mean())
    layers = atlas.backend_path("lens", name) / "measures.parquet"
    out["redundancy_mean"] = float(pd.read_parquet(layers)["redundancy"].mean()) if layers.is_file() else np.nan
    return out


def featviz_summary(atlas: Atlas, backend: str | None) -> dict:
    """MIS of feature visualisations beside natural-exemplar MIS on the same units (empty without both)."""
    from unitlens.featviz.compare import compare_explanations

    try:
        units = compare_explanations(atlas, backend).units
    except UnitlensError:  # not both scored (yet), or with different tasks
        return {}
    return {"featviz_units": len(units), "mis_exemplars_same_units": float(units["mis"].mean()),
            "mis_featviz_mean": float(units["mis_featviz"].mean()),
            "featviz_difference": float(units["difference"].mean()),
            "featviz_better": float((units["difference"] > 0).mean())}


def entry_row(folder: StudyFolder, record: dict) -> dict:
    """The study-table row of one ``study.json`` entry."""
    steps = record["steps"]
    status = entry_status(record)
    failed = next((s for s, st in steps.items() if st["status"] == "failed"), None)
    accuracy = record.get("accuracy")
    if "accuracy" in steps and steps["accuracy"]["status"] == "done":
        accuracy = steps["accuracy"].get("result", {}).get("accuracy")
    row = {
        "entry": record["name"], "model": record["model"],
        "weights": "checkpoint" if record.get("checkpoint") else "random" if record.get("random") else "pretrained",
        "checkpoint": record.get("checkpoint"), "epoch": record.get("epoch"), "accuracy": accuracy,
        "accuracy_source": record.get("accuracy_source", ""), "status": status, "failed_step": failed,
        "error": steps[failed]["error"] if failed else "",
    }
    done = {step for step, st in steps.items() if st["status"] == "done"}  # only results of what they are now
    try:
        atlas = Atlas(folder.path / record["atlas"]) if "record" in done else None
    except UnitlensError:
        atlas = None
    if atlas is not None and atlas.complete:
        units = atlas.units()
        row.update({"layers": int(units["layer"].nunique()), "units": len(units),
                    "constant_units": int(units["constant"].sum())})
        if "mis" in done:
            row.update(mis_summary(atlas, steps["mis"].get("result", {}).get("backend")))
        if "lens" in done:
            row.update(lens_summary(atlas, steps["lens"].get("result", {}).get("backend")))
        if "featviz" in done and "mis" in done:
            row.update(featviz_summary(atlas, steps["featviz"].get("result", {}).get("backend")))
    for step in STEP_SECONDS:
        row[f"{step}_s"] = float(steps[step]["seconds"]) if step in steps and steps[step]["status"] == "done" \
            else np.nan
    return row


COLUMNS = ["entry", "model", "weights", "checkpoint", "epoch", "accuracy", "accuracy_source", "status",
           "failed_step", "error", "layers", "units", "constant_units", "mis_backend", "mis_units", "mis_mean",
           "mis_p5", "mis_p95", "mis_worst5", "mis_accuracy", "lens_backend", "clarity_mean", "polysemanticity_mean",
           "redundancy_mean", "featviz_units", "mis_exemplars_same_units", "mis_featviz_mean", "featviz_difference",
           "featviz_better", *(f"{s}_s" for s in STEP_SECONDS)]
_TYPES = {"epoch": "Int64", "layers": "Int64", "units": "Int64", "constant_units": "Int64", "mis_units": "Int64",
          "featviz_units": "Int64",
          **{c: "float64" for c in ("accuracy", "mis_mean", "mis_p5", "mis_p95", "mis_worst5", "mis_accuracy",
                                    "clarity_mean", "polysemanticity_mean", "redundancy_mean",
                                    "mis_exemplars_same_units", "mis_featviz_mean", "featviz_difference",
                                    "featviz_better",
                                    *(f"{s}_s" for s in STEP_SECONDS))},
          **{c: "string" for c in ("entry", "model", "weights", "checkpoint", "accuracy_source", "status",
                                   "failed_step", "error", "mis_backend", "lens_backend")}}


def summarize(folder: StudyFolder | str) -> pd.DataFrame:
    """The study table of a study folder (see the module doc), in study order."""
    folder = folder if isinstance(folder, StudyFolder) else StudyFolder(folder)
    rows = [entry_row(folder, r) for r in folder.read_state()["entries"]]
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    return table.astype(_TYPES)


def table_stamp(folder: StudyFolder) -> dict:
    """What ``study.parquet`` is stamped with: it is the table of this study."""
    return {"kind": KIND, "study": folder.read_state().get("name")}


def write_summary(folder: StudyFolder | str | Path) -> pd.DataFrame:
    """Compute the study table and write it to ``study.parquet`` (atomically, stamped, under the study's lock)."""
    folder = folder if isinstance(folder, StudyFolder) else StudyFolder(folder)
    with folder.writing("study summary"):
        table = summarize(folder)
        write_parquet(folder.table_file, table, stamp=table_stamp(folder))
    return table


def read_table(folder: StudyFolder | str | Path) -> pd.DataFrame:
    """The study table as ``study.parquet`` holds it (written by the last run or ``unitlens study summary``); a
    damaged file, or one that is not this study's table, is a ``CorruptFile`` naming it and the fix."""
    folder = folder if isinstance(folder, StudyFolder) else StudyFolder(folder)
    path = folder.table_file
    fix = f"rewrite it: unitlens study summary {folder.path}"
    stamp = parquet_stamp(path, fix=fix)
    mine = table_stamp(folder)
    if stamp is None or stamp.get("kind") != KIND:
        raise CorruptFile(f"{path} is not a study table written by unitlens (it has no study stamp); {fix}")
    if stamp.get("study") != mine["study"]:
        raise CorruptFile(f"{path} is the table of study '{stamp.get('study')}', not of '{mine['study']}'; {fix}")
    table = read_parquet(path, fix=fix)
    missing = [c for c in COLUMNS if c not in table]
    if missing:
        raise CorruptFile(f"{path} has no column(s) {', '.join(missing)}; {fix}")
    return table
