"""``compare_bases(atlas, layer)``: a layer's channels and each of its recorded bases side by side.

Reads what other steps stored — MIS (``unitlens mis``), SemanticLens measures (``unitlens lens measures``), labels
from the atlas's label store (``unitlens lens label``; SemanticLens labels by default), the units table and each
basis's fit metrics — and computes nothing new except summary statistics: per unit set the MIS mean, 5th and 95th
percentile, the share of scored units above chance (MIS > 0.5), mean 2-AFC accuracy, a two-sided Mann–Whitney U test
of its MIS against the channels' (scipy), the units too sparse for well-posed MIS tasks (``sparse_units``: active on
fewer images than the tasks need), mean clarity and polysemanticity, redundancy, the share of units with a label,
constant (dead) units, and the fit's R², explained variance, dead features and mean active features. MIS, clarity,
polysemanticity and label share are also given over the units that are not sparse (``*_nonsparse``): a sparse unit
has few concept examples, and a θ of few examples aligns more readily with a concept. A missing result leaves its
columns empty, with a note naming the command that computes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens import notebook
from unitlens.atlas.atlas import Atlas
from unitlens.atlas.labels import KEY, NO_LABEL, LabelStore, set_name
from unitlens.basis.options import BasisCompareOptions
from unitlens.basis.store import list_bases, load_basis
from unitlens.errors import BadInput, BasisError, UnitlensError
from unitlens.options import takes_options

CHANNELS = "channels"


@dataclass
class BasisComparison:
    """One row per unit set (``basis`` = "channels" for the layer itself); ``mis`` / ``clarity``: the per-unit
    values of the scored units of each set, for the figure; ``mis_nonsparse``: MIS of the units that are not too
    sparse for well-posed tasks."""

    layer: str
    table: pd.DataFrame
    mis: dict[str, np.ndarray] = field(default_factory=dict)
    mis_nonsparse: dict[str, np.ndarray] = field(default_factory=dict)
    clarity: dict[str, np.ndarray] = field(default_factory=dict)
    backend: str | None = None
    lens_backend: str | None = None
    labels: str = ""  # the label set of the label shares
    notes: list[str] = field(default_factory=list)

    def _repr_html_(self) -> str:
        facts = {"MIS backend": self.backend, "lens backend": self.lens_backend, "labels": self.labels or "none",
                 **{f"note {i + 1}": n for i, n in enumerate(self.notes)}}
        return notebook.header(f"{self.layer}: channels and bases", facts) + notebook.table(self.table)


def _mis_frame(atlas: Atlas, layers: list[str], backend: str | None, notes: list[str]
               ) -> tuple[pd.DataFrame, str | None, int]:
    """The per-unit MIS of ``layers`` with ``backend``, its name, and the exemplars a unit's tasks use."""
    import json

    from unitlens.mis.defaults import BACKEND, K_EXPL, N_TASKS
    from unitlens.mis.scoring import METRIC, load_scores

    scores = atlas.scores()
    mis = scores[(scores["metric"] == METRIC) & scores["layer"].isin(layers)]
    have = sorted(mis["backend"].unique())
    if backend is None and have:
        backend = BACKEND if len(have) > 1 else have[0]
    named = [b for b in have if b == backend or b.split("+")[0].startswith(f"{backend}:")]  # offline -> offline:...
    backend = named[0] if len(named) == 1 else backend
    if not have or backend not in have:
        notes.append(f"no MIS scores{f' of backend {backend}' if backend else ''} for these layers: run unitlens mis "
                     f"{atlas.path} --layers {','.join(layers)}")
        return pd.DataFrame(columns=["layer", "unit", "mis", "mis_accuracy", "status"]), backend, \
            N_TASKS * (K_EXPL + 1)
    params = json.loads(mis.loc[mis["backend"] == backend, "params"].iloc[0])
    need = int(params.get("n_tasks", N_TASKS)) * (int(params.get("k", K_EXPL)) + 1)
    frame = load_scores(atlas, backend)
    return frame[frame["layer"].isin(layers)], backend, need


def _lens(atlas: Atlas, layers: list[str], backend: str | None, notes: list[str]):
    """(per-unit clarity/polysemanticity frame, per-layer redundancy, backend name)."""
    from unitlens.lens.analysis import METRICS
    from unitlens.lens.store import LensStore

    try:
        store = LensStore.open(atlas, backend)
    except UnitlensError as err:
        notes.append(f"no lens measures: {err}")
        return None, {}, backend
    scores = atlas.scores()
    lens = scores[(scores["backend"] == store.backend) & scores["metric"].isin(METRICS) & scores["layer"].isin(layers)]
    measures = lens.pivot_table(index=["layer", "unit"], columns="metric", values="value").reset_index() \
        if len(lens) else None
    path = store.path / "measures.parquet"
    per_layer = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["layer", "redundancy"])
    redundancy = dict(zip(per_layer["layer"], per_layer["redundancy"]))
    missing = [n for n in layers if n not in set(lens["layer"])]
    if missing:
        notes.append(f"no lens measures ({store.backend}) for {', '.join(missing)}: run unitlens lens embed "
                     f"{atlas.path} --layers {','.join(missing)}, then unitlens lens measures with the same layers")
    return measures, redundancy, store.backend


def _labels(atlas: Atlas, layers: list[str], method: str | None, lens_backend: str | None,
            notes: list[str]) -> tuple[pd.DataFrame | None, str]:
    """The labels whose labelled share is compared, and the name of their set: ``method``'s (default: SemanticLens
    of the lens backend where it has labels, else the set that covers most of ``layers``)."""
    store = LabelStore(atlas)
    labels = None
    if method is None and lens_backend is not None:
        labels = store.pick(layers, "semanticlens", lens_backend)
    if labels is None:
        labels = store.pick(layers, method)
    if labels is None:
        what = f"{method} labels" if method else "labels"
        notes.append(f"no {what} of these layers: run unitlens lens label {atlas.path} --concepts FILE (after "
                     "unitlens lens embed)")
        return None, ""
    name = set_name(*labels.iloc[0][list(KEY)])
    if [n for n in layers if n not in set(labels["layer"])]:
        notes.append(f"the {name} labels do not cover every unit set here: label again after embedding them")
    return labels, name


def sparse_units(atlas: Atlas, layer: str, need: int) -> np.ndarray:
    """(U,) bool: units whose ``need`` most activating exemplars reach the unit's minimum (a sparse feature that is
    0 on all but a few images). Their top and bottom exemplars then share images of equal activation — ties, which
    the atlas orders by sample id — so their MIS tasks are ill-posed and score at or below chance."""
    ex = atlas.exemplars(layer)
    if ex.k < need:
        return np.zeros(ex.top_vals.shape[0], dtype=bool)
    return (ex.top_vals[:, need - 1] <= ex.bottom_vals[:, 0]).numpy()


@takes_options(BasisCompareOptions)
def compare_bases(atlas: Atlas | str | Path, layer: str,
                  options: BasisCompareOptions | None = None) -> BasisComparison:
    """Compare ``layer``'s channels with its recorded bases (see the module doc).

    Parameters
    ----------
    atlas
        The atlas (a path or an ``Atlas``).
    layer
        A recorded layer with at least one recorded basis.
    options
        A ``BasisCompareOptions``; any of its fields may also be given as a keyword argument (see below).

    Returns
    -------
    BasisComparison
        One row per unit set, the per-unit values the figure shows (``plot_basis_comparison``), notes naming the
        command behind every missing column.
    """
    from scipy.stats import mannwhitneyu

    options = options or BasisCompareOptions()
    bases = list(options.bases) if options.bases is not None else None
    atlas = Atlas.open(atlas)
    atlas.require_complete()
    if layer in atlas.derived_layers:
        raise BadInput(f"'{layer}' is a derived layer; compare its parent {atlas.derived_layers[layer]['parent']}")
    atlas.layer(layer)  # an unknown layer is an error naming the atlas's layers
    derived = {n: about for n, about in atlas.derived_layers.items() if about.get("parent") == layer}
    if bases is not None:
        unknown = sorted(set(bases) - {a["basis"] for a in derived.values()})
        if unknown:
            raise BasisError(f"layer {layer} of {atlas.path} has no recorded basis {', '.join(unknown)}; it has "
                             f"{', '.join(a['basis'] for a in derived.values()) or 'none'}")
        derived = {n: a for n, a in derived.items() if a["basis"] in bases}
    fitted = [b for b in list_bases(atlas) if b.rsplit("::", 1)[0] == layer and b.rsplit("::", 1)[1] in
              (bases if bases is not None else [b.rsplit("::", 1)[1]])]
    notes = [f"basis '{b}' is fitted but not recorded: unitlens basis record {atlas.path} '{b}'"
             for b in fitted if b not in derived]
    if not derived:
        raise BasisError(f"layer {layer} of {atlas.path} has no recorded basis; fit one with unitlens basis fit "
                         f"{atlas.path} --layer {layer} --kind sae-topk --name NAME, then unitlens basis record")
    layers = [layer, *derived]
    mis, backend, need = _mis_frame(atlas, layers, options.backend, notes)
    measures, redundancy, lens_name = _lens(atlas, layers, options.lens_backend, notes)
    labels, label_set = _labels(atlas, layers, options.labels, lens_name, notes)
    units = atlas.units()
    rows, mis_values, clarity_values, dense_values = [], {}, {}, {}
    for name in layers:
        about = derived.get(name)
        label = about["basis"] if about else CHANNELS
        basis = load_basis(atlas, about["basis"], layer=layer) if about else None
        u = units[units["layer"] == name]
        m = mis[mis["layer"] == name]
        scored = m[m["status"] == "scored"] if "status" in m else m.iloc[0:0]
        v = scored["mis"].to_numpy(dtype=float)
        mis_values[label] = v
        sparse = sparse_units(atlas, name, need) & ~u.sort_values("unit")["constant"].to_numpy(dtype=bool)
        dense = v[~np.isin(scored["unit"].to_numpy(dtype=int), np.flatnonzero(sparse))]
        dense_values[label] = dense
        row = {"basis": label, "kind": about["kind"] if about else CHANNELS,
               "positions": about["positions"] if about else "", "units": len(u), "constant": int(u["constant"].sum()),
               "scored": len(v), "mis_mean": v.mean() if len(v) else np.nan,
               "mis_p5": np.quantile(v, 0.05) if len(v) else np.nan,
               "mis_p95": np.quantile(v, 0.95) if len(v) else np.nan,
               "above_chance": float((v > 0.5).mean()) if len(v) else np.nan,
               "accuracy_mean": float(scored["mis_accuracy"].mean()) if len(v) else np.nan,
               "p_vs_channels": np.nan, "sparse": int(sparse.sum()),
               "mis_mean_nonsparse": dense.mean() if len(dense) else np.nan}
        sparse_ids = np.flatnonzero(sparse)
        for metric in ("clarity", "polysemanticity"):  # means over units
            row[metric] = row[f"{metric}_nonsparse"] = np.nan
        if measures is not None:
            lm = measures[measures["layer"] == name]
            for metric in ("clarity", "polysemanticity"):
                if metric in lm and len(lm):
                    row[metric] = float(lm[metric].mean())
                    row[f"{metric}_nonsparse"] = float(lm.loc[~lm["unit"].isin(sparse_ids), metric].mean())
            clarity_values[label] = lm["clarity"].dropna().to_numpy(dtype=float) if "clarity" in lm else np.array([])
        row["redundancy"] = float(redundancy.get(name, np.nan))
        row["label_share"] = row["label_share_nonsparse"] = np.nan
        if labels is not None and name in set(labels["layer"]):
            lab = labels[labels["layer"] == name]
            row["label_share"] = float((lab["label"] != NO_LABEL).mean())
            dense_labels = lab.loc[~lab["unit"].isin(sparse_ids), "label"]
            row["label_share_nonsparse"] = float((dense_labels != NO_LABEL).mean()) if len(dense_labels) else np.nan
        fit = basis.meta["metrics"] if basis else {}
        row.update(r2=fit.get("r2", np.nan), explained_variance=fit.get("explained_variance", np.nan),
                   dead_features=fit.get("dead_features", np.nan), mean_active=fit.get("mean_active", np.nan))
        rows.append(row)
    table = pd.DataFrame(rows)
    base = mis_values[CHANNELS]
    for i, label in enumerate(table["basis"]):
        v = mis_values[label]
        if label != CHANNELS and len(v) and len(base):
            table.loc[i, "p_vs_channels"] = float(mannwhitneyu(v, base, alternative="two-sided").pvalue)
    return BasisComparison(layer, table, mis_values, dense_values, clarity_values, backend, lens_name, label_set,
                           notes)
