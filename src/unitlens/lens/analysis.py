"""search, label, compare and measures on an embedded atlas (sections 3.3 and 3.5 of the SemanticLens paper,
Dreyer et al., 2025).

- ``search``: rank units by a(θ, p) = cos(θ, p) − cos(θ, null) for a text or image probe.
- ``label``: each unit gets the concept of a set with the largest a, or ``none`` when that a is below the
  threshold (0.025 in the paper); optional parents give network-dissection counts per concept and per parent.
- ``compare``: S(A→B) = mean over θ ∈ A of max over θ' ∈ B of cos(θ, θ'), for every pair of layers, and the
  units of A whose best match anywhere in B is below a threshold (no counterpart).
- ``measures``: clarity, polysemanticity and max similarity per unit and redundancy per layer (the tensor-level
  functions of ``unitlens.lens.unit_measures``), written to ``scores.parquet``.

Constant units (max − min < 1e-8 over the dataset) have arbitrary exemplars, so they are left out of search,
label, compare and measures (measures writes missing values for them, as MIS does).
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from unitlens import notebook
from unitlens.atlas import Atlas
from unitlens.atlas.labels import NO_LABEL, LabelStore, label_counts
from unitlens.backends import Backend, as_backend
from unitlens.errors import LensError, NotEmbedded
from unitlens.lens.defaults import IMAGE_NULL, LABEL_THRESHOLD, TEXT_NULL
from unitlens.lens.options import CompareOptions, MeasuresOptions, SearchOptions
from unitlens.lens.probes import (
    ConceptSet,
    Probe,
    concept_probes,
    image_probe,
    load_concepts,
    load_parents,
    text_probe,
)
from unitlens.lens.store import LensStore
from unitlens.options import takes_options

METRICS = ("clarity", "polysemanticity", "max_similarity")


def _store(atlas: Atlas | LensStore | str | Path, backend: Backend | str | None = None) -> LensStore:
    """The lens store of ``backend`` (a name, its start, or a ``Backend``; None: the atlas's only one, or the
    default); a ``LensStore`` is returned as it is."""
    if isinstance(atlas, LensStore):
        return atlas
    name = backend if isinstance(backend, str) or backend is None else backend.name
    return LensStore.open(Atlas.open(atlas), name)


def backend_for(store: LensStore, backend=None, device=None):
    """The backend instance that made the store (loaded by its name unless an instance is given)."""
    if backend is not None and not isinstance(backend, str):
        if backend.name != store.backend:
            raise LensError(f"backend '{backend.name}' is not the one atlas {store.atlas.path} was embedded with "
                            f"('{store.backend}')")
    else:
        backend = as_backend(store.backend, device)
    store.check_weights(backend)
    return backend


def exemplar_paths(store: LensStore, layer: str, unit: int, n: int = 5) -> list[str]:
    """File paths of a unit's top ``n`` concept examples."""
    data = store.read_layer(layer)
    ids = data.ids[unit][data.mask[unit]][:n].tolist()
    dataset = store.atlas.dataset()
    return [str(dataset.path(i)) for i in ids]


# ------------------------------------------------------------------------------------------ search
@dataclass
class SearchResult:
    """The units most aligned with a probe: ``frame`` has rank, layer, unit, a, cos_probe, cos_null (when a null
    is subtracted) and exemplars (the files of each unit's top concept examples)."""

    frame: pd.DataFrame
    probe: Probe
    backend: str
    engine: str
    options: SearchOptions | None = None
    store: LensStore | None = field(default=None, repr=False)  # for the thumbnails of the notebook view

    def _repr_html_(self) -> str:
        what = f"text probe '{self.probe.name}'" if self.probe.kind == "text" else \
            f"{self.probe.n_inputs} probe image(s)"
        facts = {"backend": self.backend, "engine": self.engine,
                 "null": "subtracted" if self.probe.null is not None else "none", "units": len(self.frame)}
        shown = self.frame.drop(columns="exemplars").head(notebook.MAX_ROWS)
        thumbs = [self.store.example_images(str(layer), int(unit), 1)[0][:1] if self.store is not None else []
                  for layer, unit in zip(shown["layer"], shown["unit"])]
        return notebook.header(f"search: {what}", facts) + notebook.image_table(
            shown, [t[0] if t else None for t in thumbs], "units, with each one's top concept example")


def make_probe(store: LensStore, backend, text: str | None = None, images=None, null: str | None = None,
               progress: bool = False) -> Probe:
    """A text probe (templates, empty-template null) or an image probe (images averaged, no null by default;
    ``null='dataset'`` subtracts the atlas's mean image embedding; see ``unitlens.lens.probes``)."""
    if (text is None) == (not images):
        raise LensError("give either a text probe or probe images (not both, not neither)")
    if text is not None:
        return text_probe(backend, text, null=null or "template")
    return image_probe(backend, list(images), atlas=store.atlas, null=null or "none",
                       null_vector=store.null_image(), progress=progress)


@takes_options(SearchOptions)
def search(atlas: Atlas | LensStore | str | Path, text: str | None = None, images: Any = None,
           options: SearchOptions | None = None, *, backend: Backend | str | None = None, probe: Probe | None = None,
           progress: bool = True) -> SearchResult:
    """The units whose θ is most aligned with a text or image probe: a = cos(θ, probe) − cos(θ, null).

    Parameters
    ----------
    atlas
        An embedded atlas (a path, an ``Atlas``, or its ``LensStore``).
    text
        A text probe (needs a backend with a text encoder); averaged over prompt templates.
    images
        Probe images or folders of them (every image below a folder), averaged; give ``text`` or ``images``.
    options
        A ``SearchOptions``; any of its fields may also be given as a keyword argument (see below).
    backend
        The backend the atlas was embedded with, as a name or a ``Backend`` instance (the instance is used to
        embed the probe); overrides ``options.backend``.
    probe
        A ready ``Probe`` (``text_probe``, ``image_probe``) instead of ``text`` or ``images``.
    progress
        Show a progress bar while probe images are embedded.

    Returns
    -------
    SearchResult
        ``.frame``: the ``top`` units, best first, with a, the cosines and their concept-example files.

    Examples
    --------
    >>> search("atlas/lite0-demo", text="a star", top=5).frame  # doctest: +SKIP
    """
    options = options or SearchOptions()
    backend = options.backend if backend is None else backend
    store = _store(atlas, backend)
    names = store.resolve(options.layers)
    if probe is None:
        probe = make_probe(store, backend_for(store, backend, options.device), text, images, options.null, progress)
    used = options.engine
    if used == "auto":
        used = "lancedb" if store.has_lance(names) else "exact"
    hits = store.search(probe.query, names, top=options.top, engine=used)
    cos_p, cos_n, paths = [], [], []
    for layer, unit in zip(hits["layer"], hits["unit"]):
        v = store.read_layer(layer).vectors[int(unit)]
        cos_p.append(float(v @ probe.vector))
        cos_n.append(float(v @ probe.null) if probe.null is not None else 0.0)
        paths.append(exemplar_paths(store, layer, int(unit), options.exemplars))
    frame = hits.assign(cos_probe=cos_p, cos_null=cos_n, exemplars=paths)
    if probe.null is None:  # a = cos(θ, p)
        frame = frame.drop(columns="cos_null")
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return SearchResult(frame, probe, store.backend, used, options, store)


# ------------------------------------------------------------------------------------------ concept alignment
def concept_set_probes(store: LensStore, concepts, backend=None, text_null: str = TEXT_NULL,
                       image_null: str = IMAGE_NULL, device=None, progress: bool = False) -> list[Probe]:
    """The probes of ``concepts`` in ``store``'s space: a path (text file or folder of image folders), a
    ``ConceptSet``, a list of strings (text concepts) or a list of ``Probe`` (returned as they are)."""
    if isinstance(concepts, (str, Path)):
        concepts = load_concepts(concepts)
    if isinstance(concepts, (list, tuple)) and concepts and all(isinstance(c, Probe) for c in concepts):
        return list(concepts)
    if isinstance(concepts, (list, tuple)):
        concepts = ConceptSet([str(c) for c in concepts], "text")
    if not concepts.names:
        raise LensError("the concept list is empty")
    return concept_probes(backend_for(store, backend, device), concepts, atlas=store.atlas,
                          null_vector=store.null_image(), text_null=text_null, image_null=image_null,
                          progress=progress)


@dataclass
class LayerAlignment:
    """a(θ_k, p) = cos(θ_k, p) − cos(θ_k, null) of every non-constant unit k of a layer with every probe p."""

    layer: str
    units: torch.Tensor  # (U,) the non-constant units
    a: torch.Tensor  # (U, L), columns in probe order
    n_constant: int


def concept_alignments(store: LensStore, probes: list[Probe], layers: list[str]) -> list[LayerAlignment]:
    """The alignment of every non-constant unit of ``layers`` with every probe (one matrix product per layer);
    shared by ``label`` (best concept per unit) and the audit (best valid and best spurious concept)."""
    if not probes:
        raise LensError("the concept list is empty")
    Q = torch.stack([p.query for p in probes])  # (L, D)
    out = []
    for name in layers:
        data = store.read_layer(name)
        units = torch.nonzero(~data.constant).flatten()
        out.append(LayerAlignment(name, units, data.vectors[units] @ Q.T, int(data.constant.sum())))
    return out


# ------------------------------------------------------------------------------------------ label
@dataclass
class LabelResult:
    frame: pd.DataFrame  # layer, unit, label, a, runner_up, a_runner_up, parent
    counts: pd.DataFrame  # layer, label, units (network dissection per concept)
    parent_counts: pd.DataFrame | None  # layer, parent, units
    unexpected: pd.DataFrame  # the units with label none
    threshold: float
    concepts: list[str]
    n_constant: int = 0
    path: Path | None = None
    backend: str = ""

    def _repr_html_(self) -> str:
        labelled = self.frame[self.frame["label"] != NO_LABEL].sort_values("a", ascending=False, kind="stable")
        facts = {"concepts": len(self.concepts), "threshold": self.threshold, "units": len(self.frame),
                 "labelled": len(labelled), "constant (left out)": self.n_constant,
                 "stored in": self.path or "not stored"}
        return (notebook.header("SemanticLens labels", facts) + notebook.table(labelled, "best aligned units")
                + notebook.table(self.counts, "units per concept and layer")
                + notebook.table(self.unexpected.sort_values("a", kind="stable"), "unexpected: no concept"))


def label(atlas: Atlas | LensStore | str | Path, concepts: Any, backend: Backend | str | None = None,
          threshold: float = LABEL_THRESHOLD, parents: Any = None, layers: list[str] | None = None,
          text_null: str = TEXT_NULL, image_null: str = IMAGE_NULL, write: bool = True, device: str | None = None,
          progress: bool = False) -> LabelResult:
    """Label every non-constant unit with its most aligned concept, or ``none`` below ``threshold``.

    Parameters
    ----------
    atlas
        An embedded atlas (a path, an ``Atlas``, or its ``LensStore``).
    concepts
        A text file (one concept per line), a folder of concept image folders, a ``ConceptSet``, a list of text
        concepts or a list of ``Probe``.
    backend
        The backend the atlas was embedded with (a name or a ``Backend``, used to embed the concepts).
    threshold
        Units whose best alignment a is below this get the label none (the SemanticLens paper's 0.025).
    parents
        A YAML/JSON file or a dict concept -> parent: units are also counted per parent.
    layers
        Layer names or globs (default: every embedded layer).
    text_null, image_null
        The null of text concepts (template or none) and of image concepts (dataset or none).
    write
        Store the labels in the atlas.
    device
        Where the backend runs (default: CUDA when present).
    progress
        Show progress bars while concepts are embedded.

    Returns
    -------
    LabelResult
        One row per non-constant unit (``.frame``), the units per concept and layer (``.counts``), the units
        aligned with no concept (``.unexpected``).
    """
    store = _store(atlas, backend)
    with store.atlas.writing("lens label") if write else nullcontext():
        names = store.resolve(layers)
        if isinstance(concepts, (str, Path)):
            concepts = load_concepts(concepts)
        probes = concept_set_probes(store, concepts, backend=backend, text_null=text_null, image_null=image_null,
                                    device=device, progress=progress)
        if isinstance(parents, (str, Path)):
            parents = load_parents(parents)
        concept_names = [p.name for p in probes]
        rows, n_const = [], 0
        for layer in concept_alignments(store, probes, names):
            n_const += layer.n_constant
            A = layer.a
            top = A.topk(min(2, A.shape[1]), dim=1)
            best_a = top.values[:, 0].double().numpy()
            best = [concept_names[i] for i in top.indices[:, 0].tolist()]
            frame = pd.DataFrame({"layer": layer.layer, "unit": layer.units.numpy(), "label": best, "a": best_a})
            if A.shape[1] > 1:
                frame["runner_up"] = [concept_names[i] for i in top.indices[:, 1].tolist()]
                frame["a_runner_up"] = top.values[:, 1].double().numpy()
            frame.loc[frame["a"] < threshold, "label"] = NO_LABEL
            rows.append(frame)
        frame = pd.concat(rows, ignore_index=True)
        if parents is not None:
            frame["parent"] = [NO_LABEL if lab == NO_LABEL else parents.get(lab, lab) for lab in frame["label"]]
        counts = label_counts(frame, "label", names)
        parent_counts = label_counts(frame, "parent", names) if parents is not None else None
        unexpected = frame[frame["label"] == NO_LABEL].reset_index(drop=True)
        result = LabelResult(frame, counts, parent_counts, unexpected, threshold, concept_names, n_const,
                             backend=store.backend)
        if write:
            source = getattr(concepts, "source", "") if isinstance(concepts, ConceptSet) else ""
            result.path = LabelStore(store.atlas).write(
                stored_rows(frame), "semanticlens", backend=store.backend, concepts=source, score_name="a",
                options={"threshold": threshold, "text_null": text_null, "image_null": image_null,
                         **({"parents": parents} if parents is not None else {})})
        return result


def stored_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A ``label`` frame (a, runner_up, a_runner_up) in the columns of the atlas's label store (score,
    runner_up, runner_up_score)."""
    return frame.rename(columns={"a": "score", "a_runner_up": "runner_up_score"})


# ------------------------------------------------------------------------------------------ compare
@dataclass
class CompareResult:
    """S(A→B) per layer pair, each unit of A's best match in B, and the units of A without a counterpart."""

    matrix: pd.DataFrame  # index: layers of A, columns: layers of B, values S(A_layer -> B_layer)
    best: pd.DataFrame  # per unit of A: layer, unit, match_layer, match_unit, cos
    unmatched: pd.DataFrame  # rows of best with cos < threshold
    threshold: float
    backend: str
    options: CompareOptions | None = None

    def _repr_html_(self) -> str:
        facts = {"backend": self.backend, "units of A": len(self.best), "without a counterpart": len(self.unmatched),
                 "threshold": self.threshold}
        return (notebook.header("SemanticLens comparison S(A→B)", facts)
                + notebook.table(self.matrix.reset_index(names="A \\ B"), "S(A→B) per layer pair")
                + notebook.table(self.unmatched, "units of A without a counterpart in B (lowest cosine first)"))


@takes_options(CompareOptions)
def compare(atlas_a: Atlas | str | Path, atlas_b: Atlas | str | Path, options: CompareOptions | None = None
            ) -> CompareResult:
    """How well the units of atlas B cover those of atlas A, in one backend's space.

    S(A→B) per layer pair is the mean over the units of the A layer of their max cosine to a unit of the B layer;
    a unit of A whose max cosine over every selected layer of B is below ``threshold`` has no counterpart.

    Parameters
    ----------
    atlas_a, atlas_b
        Two atlases embedded with the same backend (paths or ``Atlas``).
    options
        A ``CompareOptions``; any of its fields may also be given as a keyword argument (see below).

    Returns
    -------
    CompareResult
        ``.matrix`` (layers of A by layers of B), ``.best`` (each unit of A's best match), ``.unmatched``.

    Examples
    --------
    >>> compare("atlas/lite0-demo", "atlas/lite1-demo").matrix  # doctest: +SKIP
    """
    options = options or CompareOptions()
    backend, threshold = options.backend, options.threshold
    a = Atlas.open(atlas_a)
    b = Atlas.open(atlas_b)
    have_a, have_b = LensStore.backends(a), LensStore.backends(b)
    if not have_a:
        raise NotEmbedded(f"atlas {a.path} has not been embedded yet; run unitlens lens embed {a.path}")
    if not have_b:
        raise NotEmbedded(f"atlas {b.path} has not been embedded yet; run unitlens lens embed {b.path}")
    if backend is None:
        common = sorted(set(have_a) & set(have_b))
        if not common:
            raise LensError(f"the atlases were embedded with different backends ({a.path}: {', '.join(have_a)}; "
                            f"{b.path}: {', '.join(have_b)}); compare needs both in the same semantic space: "
                            "embed both with the same --backend")
        if len(common) > 1:
            raise LensError(f"both atlases are embedded with several backends ({', '.join(common)}); pick one "
                            "with --backend")
        backend = common[0]
    store_a = LensStore.open(a, backend)
    try:
        store_b = LensStore.open(b, store_a.backend)
    except LensError as err:
        raise LensError(f"atlas {b.path} is not embedded with backend '{store_a.backend}' (it has "
                        f"{', '.join(have_b)}); compare needs both atlases in the same space: run unitlens lens "
                        f"embed {b.path} --backend {store_a.backend}") from err
    names_a, names_b = store_a.resolve(options.layers_a), store_b.resolve(options.layers_b)
    vb, owner = [], []
    for j, name in enumerate(names_b):
        data = store_b.read_layer(name)
        units = torch.nonzero(~data.constant).flatten()
        vb.append(data.vectors[units])
        owner.append(torch.stack([torch.full_like(units, j), units], 1))
    VB, OB = torch.cat(vb), torch.cat(owner)
    bounds = np.cumsum([0] + [len(v) for v in vb])
    matrix = np.full((len(names_a), len(names_b)), np.nan)
    best_rows = []
    for i, name in enumerate(names_a):
        data = store_a.read_layer(name)
        units = torch.nonzero(~data.constant).flatten()
        if len(units) == 0:
            continue
        S = (data.vectors[units].double() @ VB.double().T)  # (Ua, all B units)
        for j in range(len(names_b)):
            if bounds[j + 1] > bounds[j]:
                matrix[i, j] = float(S[:, bounds[j]:bounds[j + 1]].amax(1).mean())
        val, idx = S.max(1)
        best_rows.append(pd.DataFrame({
            "layer": name, "unit": units.numpy(),
            "match_layer": [names_b[int(k)] for k in OB[idx, 0].tolist()],
            "match_unit": OB[idx, 1].numpy(), "cos": val.numpy()}))
    best = pd.concat(best_rows, ignore_index=True) if best_rows else \
        pd.DataFrame(columns=["layer", "unit", "match_layer", "match_unit", "cos"])
    unmatched = best[best["cos"] < threshold].sort_values("cos", kind="stable").reset_index(drop=True)
    return CompareResult(pd.DataFrame(matrix, index=names_a, columns=names_b), best, unmatched, threshold,
                         store_a.backend, options)


# ------------------------------------------------------------------------------------------ measures
@dataclass
class MeasuresResult:
    """Clarity, polysemanticity and max similarity per unit (``frame``) and redundancy per layer (``layers``)."""

    frame: pd.DataFrame  # layer, unit, n_examples, clarity, polysemanticity, max_similarity, partner, constant
    layers: pd.DataFrame  # layer, units, redundancy, clarity_mean, polysemanticity_mean
    backend: str
    params: dict = field(default_factory=dict)
    path: Path | None = None  # the per-layer table, when written
    options: MeasuresOptions | None = None

    def _repr_html_(self) -> str:
        facts = {"backend": self.backend, **self.params, "units": len(self.frame),
                 "stored in": self.path or "not stored"}
        units = self.frame[~self.frame["constant"]].sort_values("clarity", ascending=False, kind="stable")
        return (notebook.header("SemanticLens measures", facts) + notebook.table(self.layers, "per layer")
                + notebook.table(units, "per unit, clearest first"))


@takes_options(MeasuresOptions)
def measures(atlas: Atlas | LensStore | str | Path, backend: Backend | str | None = None,
             options: MeasuresOptions | None = None) -> MeasuresResult:
    """Clarity, polysemanticity and max similarity of every unit and redundancy of every layer, from the stored
    concept-example embeddings (section 3.5 of the SemanticLens paper).

    The scores go to ``scores.parquet`` (metrics clarity, polysemanticity, max_similarity; the backend's name;
    params with m, crop, seed, n_init; rows of other layers are kept) and the per-layer table to the lens store's
    ``measures.parquet``, unless ``write`` is false. Constant units get missing values.

    Parameters
    ----------
    atlas
        An embedded atlas (a path, an ``Atlas``, or its ``LensStore``).
    backend
        Which embedding (a name or ``Backend``); overrides ``options.backend``.
    options
        A ``MeasuresOptions``; any of its fields may also be given as a keyword argument (see below).

    Returns
    -------
    MeasuresResult
        ``.frame`` (one row per unit), ``.layers`` (one row per layer, with its redundancy).

    Examples
    --------
    >>> measures("atlas/lite0-demo", layers=["blocks.6.*"]).layers  # doctest: +SKIP
    """
    from unitlens.lens.unit_measures import measures_table

    options = options or MeasuresOptions()
    seed, n_init, write = options.seed, options.n_init, options.write
    store = _store(atlas, options.backend if backend is None else backend)
    with store.atlas.writing("lens measures") if write else nullcontext():
        names = store.resolve(options.layers)
        device = torch.device(options.device or "cpu")
        frames, layer_rows = [], []
        for name in names:
            data = store.read_layer(name)
            meta = store.layer_meta(name)
            units = torch.nonzero(~data.constant).flatten()
            U = data.theta.shape[0]
            full = pd.DataFrame({"layer": name, "unit": np.arange(U), "constant": data.constant.numpy()})
            if len(units):
                E = data.examples[units].to(device)
                table = measures_table(E, data.vectors[units].to(device), data.mask[units].to(device),
                                       units=units.tolist(), seed=seed, n_init=n_init)
                redundancy = float(table.attrs.get("redundancy", float("nan")))
                full = full.merge(table, on="unit", how="left")
            else:
                redundancy = float("nan")
                full = full.assign(n_examples=0, **{k: np.nan for k in METRICS}, partner=None)
            full["m"], full["crop"] = meta.get("m"), meta.get("crop")
            frames.append(full)
            layer_rows.append({"layer": name, "units": U, "scored": int(len(units)), "redundancy": redundancy,
                               "clarity_mean": float(full["clarity"].mean()),
                               "polysemanticity_mean": float(full["polysemanticity"].mean()),
                               "m": meta.get("m"), "crop": meta.get("crop")})
        frame = pd.concat(frames, ignore_index=True)
        per_layer = pd.DataFrame(layer_rows)
        crops = sorted({str(store.layer_meta(n).get("crop")) for n in names})
        ms = sorted({int(store.layer_meta(n)["m"]) for n in names})
        params = {"m": ms[0] if len(ms) == 1 else ms, "crop": crops[0] if len(crops) == 1 else crops, "seed": seed,
                  "n_init": n_init}
        if write:
            _write_scores(store, frame, params, names)
            others = set(store.layers) - set(names)  # measuring every layer replaces the table (even a damaged one)
            old = store.read_table("measures.parquet") if others else None
            if old is not None:
                per_layer_all = pd.concat([old[~old["layer"].isin(names)], per_layer], ignore_index=True)
            else:
                per_layer_all = per_layer
            path = store.write_table("measures.parquet", per_layer_all)
            store.write_options("measures", options.as_dict())
        return MeasuresResult(frame, per_layer, store.backend, params, path if write else None, options)


def _write_scores(store: LensStore, frame: pd.DataFrame, params: dict, names: list[str]) -> None:
    """Long score rows; params per layer: that layer's m and crop, and the 2-means seed and restarts."""
    per_layer = {name: json.dumps({**params, "m": int(store.layer_meta(name)["m"]),
                                   "crop": str(store.layer_meta(name)["crop"])}, sort_keys=True) for name in names}
    p = frame["layer"].map(per_layer)
    rows = pd.concat([
        pd.DataFrame({"layer": frame["layer"], "unit": frame["unit"].astype("int64"), "metric": metric,
                      "backend": store.backend, "value": frame[metric].astype(float), "params": p})
        for metric in METRICS], ignore_index=True)
    store.atlas.put_scores(rows)  # rows of the layers not measured now stay
