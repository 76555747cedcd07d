"""``evaluate_labels``: how faithful each method's labels are, judged on probe images it did not see.

The probe images are split once (``holdout_split``, seeded, stratified by concept pattern). Every method labels
every unit from the labelling split only; then, on the held-out split, a unit labelled c (a concept or an INVERT
formula) gets

- ``auc``: the AUC of its activation separating held-out images where c holds from the others (1: every image of
  c drives it harder than every other image; 0.5: chance), and
- ``act_diff``: its mean activation on held-out images of c minus its mean on the others (``act_diff_std``: the
  same in units of its held-out standard deviation).

Per method and layer: labelled share, mean and median AUC, share of labels with AUC >= 0.9; per layer and pair
of methods: how often both label a unit and give it the same label. Labels that are no probe concept (free text
concepts) cannot be judged and count as not evaluated.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens import notebook
from unitlens.atlas import Atlas
from unitlens.atlas.files import write_json
from unitlens.atlas.labels import NO_LABEL
from unitlens.options import takes_options
from unitlens.probe import formulas
from unitlens.probe.defaults import GOOD_AUC
from unitlens.probe.figures import plot_label_faithfulness
from unitlens.probe.labellers import LabelContext, labeller, varying
from unitlens.probe.options import EvaluationOptions
from unitlens.probe.ranking import auc_by_ranks, mean_difference, row_ranks
from unitlens.probe.split import holdout_split
from unitlens.probe.store import ProbeStore


@dataclass
class Faithfulness:
    """Every method's labels judged on the held-out probe images: per unit (``units``), per method and layer
    (``summary``), per pair of methods (``agreement``); ``notes`` say why each missing value is missing."""

    units: pd.DataFrame  # method, layer, unit, label, formula, score, auc, act_diff, act_diff_std, n_pos, n_neg
    summary: pd.DataFrame  # method, layer, units, labelled, labelled_share, evaluated, mean_auc, median_auc, ...
    agreement: pd.DataFrame  # layer, method_a, method_b, both_labelled, same, agreement
    split: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # why each missing (NaN) value of summary and agreement is missing
    atlas: str = ""  # the atlas's folder name, for titles

    def save(self, store: ProbeStore, options: EvaluationOptions) -> "Faithfulness":
        """Store the tables (and, with ``options.figure``, the figure) under the probe set's ``evaluation/``; the
        caller holds the lock."""
        for key in ("units", "summary", "agreement"):
            self.paths[key] = store.write_table(f"evaluation/{key}.parquet", getattr(self, key))
        write_json(store.path / "evaluation" / "meta.json", {**self.split, "options": options.as_dict(),
                                                             "identity": store.atlas.identity()})
        if options.figure:
            self.paths["figure"] = Path(store.path / "evaluation" / "label_faithfulness.png")
            plot_label_faithfulness(self, self.paths["figure"])
        return self

    def _repr_html_(self) -> str:
        facts = {"held out": f"{self.split.get('n_heldout')} probe images", "methods": ", ".join(
            self.split.get("methods", [])), **{f"wrote {k}": v for k, v in self.paths.items()}}
        return (notebook.header(f"label faithfulness, {self.atlas}", facts) + notebook.table(self.summary, "summary")
                + notebook.table(self.agreement, "agreement"))


def held_out_scores(store: ProbeStore, labels: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``labels`` (layer, unit, label, formula, ...) with auc, act_diff, act_diff_std, n_pos, n_neg on ``rows``."""
    member = store.membership[rows]
    out = []
    for layer, frame in labels.groupby("layer", sort=False):
        frame = frame.copy()
        acts = store.activations(layer)[:, rows].double()
        keys = sorted({f for f, lab in zip(frame["formula"], frame["label"]) if lab != NO_LABEL and f})
        judged = {}
        for key in keys:
            terms = formulas.from_json(key)
            if all(c in store.concepts for _, c, _ in terms):
                judged[key] = formulas.indicator(terms, member, store.concepts)
        cols = {k: i for i, k in enumerate(judged)}
        Y = np.stack(list(judged.values()), 1) if judged else np.zeros((len(rows), 0), dtype=bool)
        units = frame["unit"].to_numpy(dtype=np.int64, copy=True)
        col = np.array([cols.get(f, -1) if lab != NO_LABEL else -1 for f, lab in zip(frame["formula"],
                                                                                      frame["label"])])
        auc = np.full(len(frame), np.nan)
        diff = np.full(len(frame), np.nan)
        n_pos = np.zeros(len(frame), dtype=np.int64)
        has = col >= 0
        if has.any():
            A = acts[units[has]]
            unique_cols, inverse = np.unique(col[has], return_inverse=True)
            Ys = Y[:, unique_cols]
            auc[has] = auc_by_ranks(row_ranks(A), Ys)[np.arange(has.sum()), inverse]
            diff[has] = mean_difference(A, Ys)[np.arange(has.sum()), inverse]
            n_pos[has] = Ys.sum(0)[inverse]
        std = acts[units].std(1).numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            frame["auc"], frame["act_diff"], frame["act_diff_std"] = auc, diff, diff / std
        frame["n_pos"] = np.where(has, n_pos, 0)
        frame["n_neg"] = np.where(has, len(rows) - n_pos, 0)
        out.append(frame)
    return pd.concat(out, ignore_index=True)


def summarise(units: pd.DataFrame, good: float = GOOD_AUC) -> pd.DataFrame:
    """Per method and layer: units, labelled units (and share), units evaluated, mean and median AUC, the share
    with AUC at least ``good``, and the mean activation difference in standard deviations."""
    rows = []
    for (method, layer), g in units.groupby(["method", "layer"], sort=False):
        labelled = g["label"] != NO_LABEL
        auc = g.loc[labelled, "auc"].dropna()
        diff = g.loc[labelled, "act_diff_std"].dropna()
        rows.append({"method": method, "layer": layer, "units": len(g), "labelled": int(labelled.sum()),
                     "labelled_share": float(labelled.mean()), "evaluated": len(auc),
                     "mean_auc": float(auc.mean()) if len(auc) else np.nan,
                     "median_auc": float(auc.median()) if len(auc) else np.nan,
                     f"share_auc_ge_{good:g}": float((auc >= good).mean()) if len(auc) else np.nan,
                     "mean_act_diff_std": float(diff.mean()) if len(diff) else np.nan})
    return pd.DataFrame(rows)


WHY_UNLABELLED = {
    "semanticlens": "no unit's alignment with a concept reaches the threshold (--threshold)",
    "invert": "no formula holds on a share of the labelling images within INVERT's bounds",
}


def missing_notes(units: pd.DataFrame, summary: pd.DataFrame, agreed: pd.DataFrame,
                  constant: dict[str, int]) -> list[str]:
    """One sentence per missing (NaN) value of ``summary`` and ``agreement``, naming its cause. ``constant``: per
    layer, the units constant on the labelling images (none of them gets a label)."""
    notes = []
    for row in summary.itertuples(index=False):
        where = f"{row.method} labelled no unit of {row.layer}"
        if row.labelled == 0:
            cause = "all its units are constant on the labelling images" if constant.get(row.layer) == row.units \
                else WHY_UNLABELLED.get(row.method, "every unit is constant on the labelling images")
            notes.append(f"{where}: {cause}; its AUC and Δact/σ are missing (nan)")
        elif row.evaluated == 0:
            g = units[(units["method"] == row.method) & (units["layer"] == row.layer) & (units["label"] != NO_LABEL)]
            cause = "they are not probe concepts (free-text concepts cannot be judged on probe images)" \
                if (g["n_pos"] + g["n_neg"] == 0).all() else \
                "each holds on all or none of the held-out images (too few held-out images of them)"
            notes.append(f"{row.method}'s labels of {row.layer} cannot be judged: {cause}; its AUC is missing (nan)")
        elif np.isnan(row.mean_act_diff_std):
            notes.append(f"{row.method}, {row.layer}: Δact/σ is missing (nan): its judged units are constant on the "
                         "held-out images (σ = 0)")
    for layer, rows in agreed[agreed["agreement"].isna()].groupby("layer", sort=False):
        pairs = ", ".join(f"{a} and {b}" for a, b in zip(rows["method_a"], rows["method_b"]))
        notes.append(f"{layer}: the agreement of {pairs} is missing (nan): no unit has a label from both")
    return notes


def agreement(units: pd.DataFrame) -> pd.DataFrame:
    """Per layer and pair of methods: units both label, how many get the same label, and that share."""
    rows = []
    methods = list(dict.fromkeys(units["method"]))
    for layer, g in units.groupby("layer", sort=False):
        by = {m: g[g["method"] == m].set_index("unit")["label"] for m in methods}
        for a, b in itertools.combinations(methods, 2):
            la, lb = by[a].align(by[b], join="inner")
            both = (la != NO_LABEL) & (lb != NO_LABEL)
            same = both & (la == lb)
            share = float(same.sum() / both.sum()) if both.any() else np.nan
            rows.append({"layer": layer, "method_a": a, "method_b": b, "both_labelled": int(both.sum()),
                         "same": int(same.sum()), "agreement": share})
    return pd.DataFrame(rows)


@takes_options(EvaluationOptions)
def evaluate_labels(atlas: Atlas | str | Path, options: EvaluationOptions | None = None, *, write: bool = True,
                    progress: bool = True) -> Faithfulness:
    """Label with each of ``options.methods`` on the labelling split and judge every label on the held-out split.

    Parameters
    ----------
    atlas
        An atlas with a probe set (``record_probe``; ``options.probe`` names it) and, for ``semanticlens``, lens
        vectors.
    options
        An ``EvaluationOptions``; any of its fields may also be given as a keyword argument (see below).
    write
        Store the tables (and the figure) under the probe set's ``evaluation/``, under the atlas's write lock
        (taken before any work).
    progress
        Show progress bars.

    Returns
    -------
    Faithfulness
        Per unit, per method and layer, per pair of methods; ``plot_label_faithfulness`` draws it.
    """
    options = options or EvaluationOptions()
    store = ProbeStore.open(atlas, options.probe)
    if write:  # a busy atlas fails before the work
        with store.atlas.writing("lens evaluate-labels"):
            return evaluate_labels(store.atlas, options, write=False, progress=progress).save(store, options)
    names = store.resolve(list(options.layers) if options.layers else None)
    label_rows, held_rows = holdout_split(store.membership, options.holdout, options.seed)
    LabelContext(store, held_rows).contrasting(what="held out to judge the labels", warn=False)
    ctx = LabelContext(store, label_rows, options.concepts, options.backend, options.device, progress)  # one warning
    ctx.contrasting()  # a probe set of one class is refused before any labeller runs
    frames = []
    for method in options.methods:
        frames.append(labeller(method, options).label(ctx, names).assign(method=method))
    labels = pd.concat(frames, ignore_index=True)
    units = held_out_scores(store, labels, held_rows)
    units = units[["method", "layer", "unit", "label", "formula", "score", "auc", "act_diff", "act_diff_std",
                   "n_pos", "n_neg"]]
    split = {"holdout": options.holdout, "seed": options.seed, "n_labelling": int(len(label_rows)),
             "n_heldout": int(len(held_rows)), "concepts": options.concepts, "probe": store.name,
             "methods": list(options.methods)}
    summary, agreed = summarise(units), agreement(units)
    constant = {layer: ctx.n_units(layer) - len(varying(ctx.activations(layer))) for layer in names}
    return Faithfulness(units, summary, agreed, split, notes=missing_notes(units, summary, agreed, constant),
                        atlas=store.atlas.path.name)
