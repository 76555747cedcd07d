"""``audit_class(atlas, cls, valid, spurious)``: do the units a class relies on encode valid or spurious concepts?
(the SemanticLens paper, section 3.4 and fig. 3a, steps 1 and 2.)

For every unit k of the audited layers, with θ_k its lens vector (``unitlens lens embed``)::

    a_valid_k = max over valid concepts v    of  cos(θ_v, θ_k) − cos(θ_null, θ_k)
    a_spur_k  = max over spurious concepts s of  cos(θ_s, θ_k) − cos(θ_null, θ_k)

computed by ``unitlens.lens.analysis.concept_alignments``, the function ``lens label`` uses: text concepts average
the four prompt templates and subtract the empty-template null; image-folder concepts average the folder's images
and subtract the mean dataset image (the null ``lens label`` uses for them).

Only the units that matter for the class are judged. Relevance comes from CRP (``unitlens relevance ATLAS --class
X``): per sample of the class, the share of the layer's total |relevance| that goes to the unit; ``rel_max`` is its
maximum over the class's samples, ``rel_mean`` its mean. The paper keeps the units whose "maximal relevance" on the
test set is at least 2.8 % and sizes the dots by it, so the default is ``relevance_stat='max'`` (``relevance`` =
rel_max) with ``min_relevance`` = 0.028; ``relevance_stat='mean'`` filters on rel_mean instead, a much stricter bar
(of the 512 units of Lite0's blocks.5.0/6.0 ``conv_pwl``, 28 have a maximum share ≥ 2.8 % for the demo's "envelope",
one a mean share). Units at or above the bar get a verdict:

    valid       a_valid > 0 and a_spur ≤ 0
    spurious    a_spur > 0 and a_valid ≤ 0
    both        a_valid > 0 and a_spur > 0     (column ``leans``: the larger of the two, valid or spurious)
    unexpected  a_valid ≤ 0 and a_spur ≤ 0     (aligned with no given concept: inspect it, then add a concept)

The summary counts the units of each verdict per layer and sums their ``rel_mean``: the mean share of the layer's
relevance (per sample of the class) that units of that verdict carry; the row ``not relevant`` holds the units
below the bar. Constant units (no meaningful θ) are left out, and counted.

Written to ``<atlas>/audit/class<index>-<name>.parquet``, ``.csv`` (lists joined by ';') and ``.json`` (the
options, concepts and summary). ``stored_audit(atlas, index)`` reads the table back, ``audited_units(atlas, index,
verdicts)`` the units of some verdicts (``unitlens audit prune --from-audit``); ``audited_classes(atlas)`` lists
the classes audited.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens import notebook
from unitlens.atlas import Atlas
from unitlens.atlas.files import atomic_write, read_json, read_parquet, safe_name, write_json, write_parquet
from unitlens.audit.options import AuditOptions
from unitlens.errors import AuditError, AuditNotComputed, LensError, RelevanceError
from unitlens.lens.analysis import (
    backend_for,
    concept_alignments,
    concept_set_probes,
    exemplar_paths,
)
from unitlens.lens.defaults import DEFAULT_LENS_BACKEND
from unitlens.lens.probes import ConceptSet, Probe, load_concepts
from unitlens.lens.store import LensStore
from unitlens.options import takes_options
from unitlens.runtime import channels_last_mode

VERDICTS = ("valid", "spurious", "both", "unexpected")
NOT_RELEVANT = "not relevant"
STATS = {"mean": "rel_mean", "max": "rel_max"}
OTHER_CLASSES = 5


@dataclass
class AuditResult:
    """The audit of one class. ``frame``: one row per relevant unit, most relevant first."""

    frame: pd.DataFrame  # layer, unit, relevance, rel_mean, rel_max, a_valid, valid_concept, a_spur,
    #                      spurious_concept, verdict, leans, exemplars, relevant_ids, other_classes
    summary: pd.DataFrame  # layer, verdict, units, rel_share
    class_index: int
    class_name: str
    backend: str
    atlas: Path
    options: AuditOptions
    valid: list[str]
    spurious: list[str]
    n_constant: int = 0
    notes: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def min_relevance(self) -> float:
        """The relevance a unit needs to be judged."""
        return self.options.min_relevance

    @property
    def stat(self) -> str:
        """Which relevance filters: ``max`` or ``mean`` share over the class's samples."""
        return self.options.relevance_stat

    @property
    def flagged(self) -> pd.DataFrame:
        """The spurious and unexpected units (most relevant first)."""
        return self.frame[self.frame["verdict"].isin(["spurious", "unexpected"])].reset_index(drop=True)

    def _repr_html_(self) -> str:
        counts = self.frame["verdict"].value_counts()
        facts = {"backend": self.backend, "judged": f"units with {self.stat} relevance ≥ {self.min_relevance:g}",
                 "verdicts": ", ".join(f"{v} {int(counts.get(v, 0))}" for v in VERDICTS),
                 "valid concepts": ", ".join(self.valid), "spurious concepts": ", ".join(self.spurious),
                 "written": self.path or "(not written)"}
        shown = ["layer", "unit", "relevance", "a_valid", "valid_concept", "a_spur", "spurious_concept", "verdict",
                 "other_classes"]
        notes = "".join(f"<div><i>{notebook.escape(n)}</i></div>" for n in self.notes)
        return (notebook.header(f"audit of class {self.class_index} '{self.class_name}'", facts)
                + notebook.table(self.frame[[c for c in shown if c in self.frame]], "units, most relevant first")
                + notebook.table(self.summary, "units and relevance share per verdict") + notes)


def verdicts(a_valid: np.ndarray, a_spur: np.ndarray) -> np.ndarray:
    """valid / spurious / both / unexpected from the signs of the two alignments (see the module doc)."""
    v, s = np.asarray(a_valid) > 0, np.asarray(a_spur) > 0
    return np.select([v & ~s, s & ~v, v & s], ["valid", "spurious", "both"], "unexpected").astype(object)


@takes_options(AuditOptions)
def audit_class(atlas, cls, valid, spurious, options: AuditOptions | None = None, *, backend=None,
                relevance: pd.DataFrame | None = None, other_classes: pd.DataFrame | None = None,
                progress: bool = True) -> AuditResult:
    """Verdicts (valid, spurious, both, unexpected) for the units relevant to one class.

    Parameters
    ----------
    atlas
        An atlas embedded by a lens backend (``unitlens lens embed``) with the class's relevance
        (``class_relevance``).
    cls
        The class: its index or name.
    valid, spurious
        The valid and the spurious concepts: a text file (one concept per line; needs a backend with a text
        encoder), a folder of concept image folders, a ``ConceptSet``, a list of strings or a list of ``Probe``.
    options
        An ``AuditOptions``; any of its fields may also be given as a keyword argument (see below).
    backend
        The lens backend (its name or a ``Backend``) whose lens vectors are used; needed when the atlas has
        several.
    relevance
        The table ``load_relevance(atlas, cls)`` returns (read from the atlas when None).
    other_classes
        The table ``relevant_classes`` returns (read from the atlas when None; without a predicted-class
        relevance run the column stays empty and a note says how to fill it).
    progress
        Show progress bars.

    Returns
    -------
    AuditResult
        The judged units (``frame``, most relevant first) with their alignments and verdicts, the units and
        relevance share per verdict and layer (``summary``), notes, and where it was written (``path``; with
        ``write``, under ``<atlas>/audit/``, the options stored with it). ``plot_audit`` draws it.
    """
    options = options or AuditOptions()
    store = _open_store(atlas, backend)
    if relevance is None:
        from unitlens.relevance import load_relevance

        relevance = load_relevance(store.atlas, cls)
    rel, index, name = _class_rows(relevance, cls)
    notes: list[str] = []
    names = _layers(store, rel, options.layers, index, notes)
    rel = rel[rel["layer"].isin(names)]
    with channels_last_mode(options.channels_last):  # the backend's image model, when concepts are images
        if not (_is_probes(valid) and _is_probes(spurious)):
            backend = backend_for(store, backend, options.device)  # loaded once for both sets
        v_probes = _probes(store, valid, "valid", backend, progress)
        s_probes = _probes(store, spurious, "spurious", backend, progress)
    aligned = _alignment_frame(store, v_probes, s_probes, names)
    rel = rel.assign(relevance=rel[STATS[options.relevance_stat]].astype(float))
    relevant = rel[rel["relevance"] >= options.min_relevance]
    frame = relevant.merge(aligned, on=["layer", "unit"], how="inner")
    constant = relevant.merge(aligned[["layer", "unit"]], on=["layer", "unit"], how="left", indicator=True)
    n_constant = int((constant["_merge"] == "left_only").sum())
    if n_constant:
        notes.append(f"{n_constant} relevant unit(s) are constant over the dataset (no meaningful θ) and were left "
                     "out")
    order = {n: i for i, n in enumerate(names)}
    frame = frame.assign(_order=frame["layer"].map(order)).sort_values(
        ["relevance", "_order", "unit"], ascending=[False, True, True], kind="stable").drop(columns="_order")
    frame["verdict"] = verdicts(frame["a_valid"].to_numpy(), frame["a_spur"].to_numpy())
    both = frame["verdict"] == "both"
    frame["leans"] = np.where(both, np.where(frame["a_valid"] > frame["a_spur"], "valid",
                                             np.where(frame["a_spur"] > frame["a_valid"], "spurious", "equal")), "")
    frame["exemplars"] = [exemplar_paths(store, layer, int(unit), options.exemplars)
                          for layer, unit in zip(frame["layer"], frame["unit"])]
    frame["relevant_ids"] = [[int(i) for i in ids] if ids is not None else [] for ids in
                             (frame["top_ids"] if "top_ids" in frame else [None] * len(frame))]
    frame["other_classes"] = _other_classes(store.atlas, frame, index, other_classes, notes)
    keep = ["layer", "unit", "relevance", "rel_mean", "rel_max", "a_valid", "valid_concept", "a_spur",
            "spurious_concept", "verdict", "leans", "exemplars", "relevant_ids", "other_classes"]
    frame = frame[[c for c in keep if c in frame]].reset_index(drop=True)
    if frame.empty:
        top = rel.sort_values("relevance", ascending=False).head(1)
        best = f" (the most relevant unit has {float(top['relevance'].iloc[0]):.4g})" if len(top) else ""
        notes.append(f"no unit of {', '.join(names)} reaches relevance {options.min_relevance:g}{best}; lower "
                     "--min-relevance")
    result = AuditResult(frame, _summary(frame, rel, options.min_relevance, names), index, name, store.backend,
                         store.atlas.path, options, [p.name for p in v_probes], [p.name for p in s_probes],
                         n_constant, notes)
    if options.write:
        result.path = _write(result, _source(valid), _source(spurious))
    return result


# ------------------------------------------------------------------------------------------ inputs
def _open_store(atlas, backend) -> LensStore:
    """The lens store of ``backend``; when None, the only one, or the default backend's when there are several."""
    atlas = Atlas.open(atlas)
    name = backend if isinstance(backend, str) or backend is None else backend.name
    if name is None and len(LensStore.backends(atlas)) > 1:
        try:
            return LensStore.open(atlas, DEFAULT_LENS_BACKEND)
        except LensError:
            pass  # no store of the default backend: the error below asks to choose
    return LensStore.open(atlas, name)


def _class_rows(relevance: pd.DataFrame, cls) -> tuple[pd.DataFrame, int, str]:
    """The rows of class ``cls`` (a table of one class is taken as is unless its index contradicts ``cls``)."""
    need = {"layer", "unit", "class_index", "class_name", "rel_mean", "rel_max"}
    missing = need - set(relevance.columns)
    if missing:
        raise AuditError(f"the relevance table lacks column(s) {sorted(missing)}; it should come from "
                         "unitlens.relevance.load_relevance")
    if relevance.empty:
        raise AuditError("the relevance table is empty; run unitlens relevance ATLAS --class X")
    text = str(cls).strip()
    by_index = text.lstrip("-").isdigit()
    classes = relevance[["class_index", "class_name"]].drop_duplicates("class_index")
    if len(classes) > 1 or by_index:
        sel = relevance["class_index"] == int(text) if by_index else \
            relevance["class_name"].astype(str).str.lower() == text.lower()
        if not sel.any():
            have = ", ".join(f"{i} ({n})" for i, n in classes.itertuples(index=False))
            raise AuditError(f"the relevance table has no rows of class {cls} (it has {have}); run unitlens "
                             f"relevance ATLAS --class {cls}")
        relevance = relevance[sel]
    first = relevance.iloc[0]
    return relevance.reset_index(drop=True), int(first["class_index"]), str(first["class_name"])


def _layers(store: LensStore, rel: pd.DataFrame, layers, index: int, notes: list[str]) -> list[str]:
    """Audited layers: ``layers``, or every layer with both relevance and lens vectors (atlas order)."""
    have = list(dict.fromkeys(rel["layer"]))
    atlas = store.atlas.path
    if layers is not None:
        wanted = [info.name for info in store.atlas.select_layers(layers)]
        missing = [n for n in wanted if n not in have]
        if missing:
            raise AuditError(f"no relevance of class {index} for layer(s) {', '.join(missing)}; run unitlens "
                             f"relevance {atlas} --class {index} for them (relevance is stored for "
                             f"{', '.join(have) or 'no layer'})")
        return store.resolve(wanted)
    embedded = store.layers
    common = [n for n in embedded if n in have]
    if not common:
        raise AuditError(f"the relevance of class {index} covers layer(s) {', '.join(have)}, none of them embedded "
                         f"with backend '{store.backend}' (embedded: {', '.join(embedded) or 'none'}); run unitlens "
                         f"lens embed {atlas} --backend {store.backend} --layers {','.join(have)}, or unitlens "
                         f"relevance {atlas} --class {index} on an embedded layer")
    rest = [n for n in have if n not in common]
    if rest:
        notes.append(f"layer(s) {', '.join(rest)} have relevance but no lens vectors of '{store.backend}' and were "
                     f"not audited; unitlens lens embed {atlas} --layers {','.join(rest)} adds them")
    return common


def _source(concepts) -> str:
    if isinstance(concepts, (str, Path)):
        return str(concepts)
    return concepts.source if isinstance(concepts, ConceptSet) else ""


def _is_probes(concepts) -> bool:
    return isinstance(concepts, (list, tuple)) and bool(concepts) and all(isinstance(c, Probe) for c in concepts)


def _probes(store: LensStore, concepts, which: str, backend, progress: bool) -> list[Probe]:
    """The probes of one concept set; text concepts on a backend without a text encoder are a clear error."""
    if isinstance(concepts, (str, Path)):
        concepts = load_concepts(concepts)
    is_text = (isinstance(concepts, ConceptSet) and concepts.kind == "text") or (
        isinstance(concepts, (list, tuple)) and not _is_probes(concepts))
    if is_text:
        if not getattr(backend, "has_text", False):
            where = f" ({concepts.source})" if isinstance(concepts, ConceptSet) and concepts.source else ""
            raise AuditError(
                f"the {which} concepts{where} are text, but backend '{backend.name}', which atlas "
                f"{store.atlas.path} is embedded with, has no text encoder: give the {which} concepts as a folder "
                "of concept folders (one sub-folder of images per concept), or embed the atlas with a backend "
                f"that has a text encoder (unitlens lens embed {store.atlas.path} --backend "
                f"{DEFAULT_LENS_BACKEND}, or openclip:MobileCLIP-S2/datacompdr) and pass --backend")
    probes = concept_set_probes(store, concepts, backend=backend, progress=progress)
    if not probes:
        raise AuditError(f"the {which} concept set is empty")
    return probes


def _alignment_frame(store: LensStore, valid: list[Probe], spurious: list[Probe], layers: list[str]) -> pd.DataFrame:
    """Per non-constant unit: the best valid and best spurious alignment and their concepts."""
    frames = []
    for v, s in zip(concept_alignments(store, valid, layers), concept_alignments(store, spurious, layers)):
        best_v, arg_v = v.a.max(1)
        best_s, arg_s = s.a.max(1)
        frames.append(pd.DataFrame({
            "layer": v.layer, "unit": v.units.numpy(), "a_valid": best_v.double().numpy(),
            "valid_concept": [valid[i].name for i in arg_v.tolist()], "a_spur": best_s.double().numpy(),
            "spurious_concept": [spurious[i].name for i in arg_s.tolist()]}))
    return pd.concat(frames, ignore_index=True)


def _other_classes(atlas: Atlas, frame: pd.DataFrame, index: int, given: pd.DataFrame | None,
                   notes: list[str]) -> list[str | None]:
    """'name (share)' of up to five other classes each unit is relevant for (None when not computed)."""
    if frame.empty:
        return []
    if given is None:
        from unitlens.relevance import relevant_classes

        try:
            given = pd.concat([relevant_classes(atlas, layer, units=sorted(map(int, g["unit"])),
                                                top=OTHER_CLASSES + 1)
                               for layer, g in frame.groupby("layer", sort=False)], ignore_index=True)
        except RelevanceError as err:
            notes.append(f"the other classes each unit is relevant for are not known: {err}")
            return [None] * len(frame)
    others = given[given["class_index"] != index].sort_values("rel_mean", ascending=False, kind="stable")
    text = {key: "; ".join(f"{n} ({r:.1%})" for n, r in zip(g["class_name"], g["rel_mean"]))
            for key, g in ((k, g.head(OTHER_CLASSES)) for k, g in others.groupby(["layer", "unit"], sort=False))}
    return [text.get((layer, int(unit)), "") for layer, unit in zip(frame["layer"], frame["unit"])]


# ------------------------------------------------------------------------------------------ outputs
def _summary(frame: pd.DataFrame, rel: pd.DataFrame, min_relevance: float, layers: list[str]) -> pd.DataFrame:
    """Units and their summed rel_mean (share of the layer's relevance) per layer and verdict (all four listed),
    then the units below the bar."""
    rows = []
    for layer in layers:
        sub = frame[frame["layer"] == layer]
        for v in VERDICTS:
            hit = sub[sub["verdict"] == v]
            rows.append({"layer": layer, "verdict": v, "units": len(hit), "rel_share": float(hit["rel_mean"].sum())})
        low = rel[(rel["layer"] == layer) & (rel["relevance"] < min_relevance)]
        rows.append({"layer": layer, "verdict": NOT_RELEVANT, "units": len(low),
                     "rel_share": float(low["rel_mean"].sum())})
    return pd.DataFrame(rows)


def audit_basename(index: int, name: str) -> str:
    """``class<index>-<name>``, the stem of an audit's files."""
    return f"class{index}-" + safe_name(name, default="class", hashed=False)


def _write(result: AuditResult, valid_source: str, spurious_source: str) -> Path:
    base = Atlas.open(result.atlas).derived_path("audit", audit_basename(result.class_index, result.class_name))
    path = base.parent / (base.name + ".parquet")
    write_parquet(path, result.frame)
    flat = result.frame.assign(**{c: [";".join(map(str, v)) for v in result.frame[c]]
                                  for c in ("exemplars", "relevant_ids")})
    atomic_write(base.parent / (base.name + ".csv"), lambda tmp: flat.to_csv(tmp, index=False))
    write_json(base.parent / (base.name + ".json"), {
        "class_index": result.class_index, "class_name": result.class_name, "backend": result.backend,
        "options": result.options.as_dict(), "relevance_column": STATS[result.stat],
        "valid": result.valid, "spurious": result.spurious, "valid_source": valid_source,
        "spurious_source": spurious_source, "n_constant": result.n_constant, "notes": result.notes,
        "summary": result.summary.to_dict("records"), "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "atlas": Atlas.open(result.atlas).identity()})
    return path


def audited_classes(atlas) -> pd.DataFrame:
    """One row per class with a stored audit: class_index, class_name, backend, written (from the audits' JSON)."""
    atlas = Atlas.open(atlas)
    rows = []
    for path in sorted(atlas.derived_path("audit").glob("class*.parquet")):
        meta_path = path.with_suffix(".json")
        meta = read_json(meta_path) if meta_path.is_file() else {}
        index = meta.get("class_index", path.stem[len("class"):].split("-", 1)[0])
        rows.append({"class_index": int(index), "class_name": meta.get("class_name", ""),
                     "backend": meta.get("backend", ""), "written": meta.get("written", "")})
    return pd.DataFrame(rows, columns=["class_index", "class_name", "backend", "written"])


def stored_audit(atlas, class_index: int) -> pd.DataFrame:
    """The stored audit table of class ``class_index`` (the last ``audit`` of it)."""
    atlas = Atlas.open(atlas)
    hits = sorted(atlas.derived_path("audit").glob(f"class{int(class_index)}-*.parquet"))
    if not hits:
        raise AuditNotComputed(f"atlas {atlas.path} has no stored audit of class {class_index}; run unitlens audit "
                         f"{atlas.path} --class {class_index} --valid CONCEPTS --spurious CONCEPTS first")
    fix = (f"delete {hits[0].with_suffix('')}.* and audit again: unitlens audit {atlas.path} --class {class_index} "
           "--valid CONCEPTS --spurious CONCEPTS")
    meta_path = hits[0].with_suffix(".json")
    if meta_path.is_file():
        atlas.check_identity(read_json(meta_path, fix=fix).get("atlas"), f"the audit {hits[0]}", fix)
    return read_parquet(hits[0], fix=fix)


def audited_units(atlas, class_index: int, verdicts: Sequence[str] = ("spurious",)) -> dict[str, list[int]]:
    """``{layer: [unit, ...]}`` of the stored audit of class ``class_index`` whose verdict is one of ``verdicts``
    (the units ``prune_check`` ablates with ``unitlens audit prune --from-audit``)."""
    unknown = sorted(set(verdicts) - set(VERDICTS))
    if unknown:
        raise AuditError(f"unknown verdict(s) {unknown}; choose from {', '.join(VERDICTS)}")
    table = stored_audit(atlas, class_index)
    hit = table[table["verdict"].isin(list(verdicts))]
    if hit.empty:
        counts = ", ".join(f"{v} {n}" for v, n in table["verdict"].value_counts().items()) or "no units"
        raise AuditError(f"the stored audit of class {class_index} has no unit with verdict {', '.join(verdicts)} "
                         f"(it has {counts})")
    return {layer: sorted(map(int, g["unit"])) for layer, g in hit.groupby("layer", sort=False)}
