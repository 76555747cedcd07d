"""``plan_study(study_file)``: a study's dry run. Per entry: the model its name resolves to (source, architecture,
pretrained tag), its input size, the layers and units the record pass will record, what the check before the pass
leaves out or splits (``recording.check``), and an estimate of the atlas's size on disk; then the totals.

Nothing is downloaded and no data is read: every model is built on the meta device (``load_model(meta=True)``:
shapes without memory or weights) and checked there. Entries whose timm architecture, input size and head are the
same (tags of one architecture) share one check. An entry that cannot be planned, or whose check finds layers the
pass cannot record, is named with the reason in its ``problem`` column; ``study run`` fails that entry the same
way, before reading any image, and goes on with the others.
"""
from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from unitlens.errors import UnitlensError
from unitlens.options import takes_options
from unitlens.runtime import Progress
from unitlens.study.options import StudyPlanOptions
from unitlens.study.spec import Entry, load_spec

# bytes an atlas spends per unit besides its exemplars (its units.parquet row: 25 on 40 random images, where the
# statistics compress well; more distinct values on a real dataset), and per layer (the exemplar file's header,
# about 300, and the manifest's layer record, about 250)
UNIT_ROW_BYTES = 32
LAYER_BYTES = 550
PLAN_COLUMNS = ["entry", "model", "source", "architecture", "tag", "weights", "input_size", "layers", "units",
                "left_out", "split", "atlas_mb", "check", "problem"]


def exemplar_bytes(units: int, k: int) -> int:
    """Bytes of the exemplar files of ``units`` units: per unit k top and k bottom (id int32, value float32)."""
    return units * 2 * k * 8


def estimate_atlas_bytes(widths: list[int], k: int) -> int:
    """Estimated size of an atlas's exemplars, unit table and manifest (its samples table, about 30 bytes per
    image, comes on top)."""
    units = sum(widths)
    return exemplar_bytes(units, k) + units * UNIT_ROW_BYTES + len(widths) * LAYER_BYTES


@dataclass
class StudyPlan:
    """A planned study: one row per entry (``PLAN_COLUMNS``) and the seconds planning took."""

    name: str
    path: Path
    table: pd.DataFrame
    seconds: float

    @property
    def problems(self) -> pd.DataFrame:
        """The entries that cannot be recorded as they are (``problem`` set)."""
        return self.table[self.table["problem"] != ""]

    def totals(self) -> dict:
        """Entries, layers, units and estimated atlas size over the whole study (entries with a problem apart)."""
        ok = self.table[self.table["problem"] == ""]
        return {"entries": len(self.table), "planned": len(ok), "problems": len(self.table) - len(ok),
                "layers": int(ok["layers"].sum()), "units": int(ok["units"].sum()),
                "left_out": int(ok["left_out"].sum()), "atlas_gb": round(float(ok["atlas_mb"].sum()) / 1024, 2)}


def _name_parts(model: str) -> tuple[str, str, str]:
    """(source, architecture, tag) of a model name; an untagged timm name shows timm's default tag in brackets."""
    from unitlens.zoo.factory import MODEL_FILE_SUFFIXES, source_of, split_options

    base, _ = split_options(model)
    if Path(base).suffix in MODEL_FILE_SUFFIXES:
        return "file", Path(base).name, ""
    source, rest = source_of(base)
    if source != "timm":
        return source, rest, ""
    arch, _, tag = rest.partition(".")
    if not tag:
        import timm.models

        cfg = timm.models.get_pretrained_cfg(arch)
        tag = f"({cfg.tag})" if cfg is not None and cfg.tag else ""
    return source, arch, tag


def _shared_key(entry: Entry) -> tuple | None:
    """Entries with the same key share one check: a timm architecture with the same input size, head, layer
    selection and record options (tags of one architecture); None: the entry is checked on its own."""
    from unitlens.zoo.factory import source_of, split_options

    base, options = split_options(entry.model)
    source, rest = source_of(base)
    if source != "timm" or entry.checkpoint is not None:
        return None
    import timm.models

    cfg = timm.models.get_pretrained_cfg(rest)
    if cfg is None:
        return None
    chosen = (entry.layers, entry.types, entry.exclude, entry.keep_first_last)
    return (rest.partition(".")[0], tuple(cfg.input_size), cfg.num_classes, tuple(sorted(options.items())),
            repr(chosen), repr(sorted(entry.options.get("record", {}).items())))


def _weights(entry: Entry) -> str:
    return "random" if entry.random else Path(entry.checkpoint).name if entry.checkpoint else "pretrained"


def plan_entry(entry: Entry) -> dict:
    """One row of the plan (``PLAN_COLUMNS``): the entry's model built without weights and checked."""
    from unitlens.recording.check import check_layers, settle
    from unitlens.recording.run import candidate_layers
    from unitlens.study.steps import entry_record_options
    from unitlens.zoo import load_model

    source, arch, tag = _name_parts(entry.model)
    row: dict = {"entry": entry.name, "model": entry.model, "source": source, "architecture": arch, "tag": tag,
                 "weights": _weights(entry), "input_size": "", "layers": 0, "units": 0, "left_out": 0, "split": 0,
                 "atlas_mb": 0.0, "check": "", "problem": ""}
    try:
        options = entry_record_options(entry)
        loaded = load_model(entry.model, pretrained=not entry.random, checkpoint=entry.checkpoint, meta=True)
        row["input_size"] = "x".join(str(s) for s in loaded.input_size)
        infos, named, include = candidate_layers(loaded, None, options)
        check = check_layers(loaded, infos, options.repeated, options.spatial, options.tokens)
        row["check"] = check.summary()
        layers = settle(check, named, include, options.exclude)
    except Exception as err:  # noqa: BLE001 - one entry's failure is its row's problem; the plan goes on
        row["problem"] = str(err) if isinstance(err, UnitlensError) else f"{type(err).__name__}: {err}"
        return row
    widths = [info.width or 0 for info in layers]
    row.update({"layers": len(layers), "units": sum(widths), "left_out": len(check.left_out),
                "split": len(check.repeated) if check.split else 0,
                "atlas_mb": round(estimate_atlas_bytes(widths, options.k) / 2**20, 1)})
    return row


def _quiet_worker() -> None:
    """A planning worker: warnings off (the check column says what the pass would warn about), one torch thread."""
    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)


@takes_options(StudyPlanOptions)
def plan_study(study_file: str | Path, options: StudyPlanOptions | None = None, *, progress: bool = True
               ) -> StudyPlan:
    """Plan every entry of ``study_file`` (a study TOML; its data folders need not exist yet): see the module doc.
    Loads no weights and reads no data.

    Parameters
    ----------
    study_file
        The study file (TOML).
    options
        The ``StudyPlanOptions``: ``jobs``, worker processes (default: one per 50 distinct models, at most the
        machine's cores; 1 plans in this process); keyword arguments override its fields.
    progress
        Show a progress bar.

    Returns
    -------
    StudyPlan
        One row per entry (model, tag, input size, layers, units, what the check leaves out or splits, estimated
        atlas size, problems), and the totals.
    """
    assert options is not None  # takes_options always passes them
    jobs = options.jobs
    t0 = time.perf_counter()
    spec = load_spec(study_file, check_data=False)
    groups: dict[object, list[Entry]] = {}  # entries that share one check, by key (or alone)
    for i, entry in enumerate(spec.entries):
        groups.setdefault(_shared_key(entry) or i, []).append(entry)
    if jobs is None:
        jobs = max(1, min(os.cpu_count() or 1, len(groups) // 50))
    planned: dict[str, dict] = {}
    with Progress(f"planning {spec.name}", len(spec.entries), progress, unit="model") as bar, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def done(group: list[Entry], row: dict) -> None:
            for entry in group:  # the others of a group share the first one's check
                planned[entry.name] = {**row, "entry": entry.name, "model": entry.model,
                                       "tag": _name_parts(entry.model)[2], "weights": _weights(entry)}
                bar.advance()

        if jobs > 1:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_quiet_worker) as pool:
                futures = {pool.submit(plan_entry, group[0]): group for group in groups.values()}
                for future in as_completed(futures):
                    done(futures[future], future.result())
        else:
            for group in groups.values():
                bar.describe(f"planning {spec.name}: {group[0].name}")
                done(group, plan_entry(group[0]))
    table = pd.DataFrame([planned[entry.name] for entry in spec.entries], columns=PLAN_COLUMNS)
    return StudyPlan(spec.name, spec.path, table, time.perf_counter() - t0)
