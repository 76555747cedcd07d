"""``compare_explanations(atlas)``: MIS with natural exemplars against MIS with feature visualisations, per unit and
per layer — which explanation makes a unit more predictable to the observer, where, and by how much.

Both scores must be of the same backend, number of tasks N, explanations K and temperature τ (the same tasks, only
the explanations differ); the comparison uses the units scored both ways. Per layer: the mean of each, the mean
paired difference (visualisations − exemplars), the share of units the visualisations serve better, the
two-sided Wilcoxon signed-rank p of the differences, and the Spearman correlation of the two over units.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens.atlas import Atlas
from unitlens.errors import BadInput, NotComputed
from unitlens.featviz.defaults import METRIC
from unitlens.mis.scoring import METRIC as NATURAL

SAME = ("n_tasks", "k", "tau")  # what both scores must share to be compared


@dataclass
class ExplanationComparison:
    """``units``: layer, unit, depth, mis (natural exemplars), mis_featviz, difference; ``layers``: one row per
    layer; ``backend`` and the shared task ``params``."""

    units: pd.DataFrame
    layers: pd.DataFrame
    backend: str
    params: dict


def _pick_backend(scores: pd.DataFrame, backend: str | None, where: str) -> str:
    names = sorted(set(scores.loc[scores["metric"] == METRIC, "backend"]))
    if not names:
        raise NotComputed(f"{where} has no MIS of feature visualisations yet; run unitlens mis {where} --explanations "
                          "featviz")
    if backend is None:
        if len(names) > 1:
            raise BadInput(f"{where} has MIS of feature visualisations for several backends {names}; pick one")
        return names[0]
    if backend not in names:
        raise NotComputed(f"{where} has no MIS of feature visualisations for backend '{backend}'; it has {names}")
    return backend


def layer_comparison(units: pd.DataFrame) -> pd.DataFrame:
    """One row per layer of a per-unit comparison frame (see the module docstring)."""
    from scipy.stats import spearmanr, wilcoxon

    rows = []
    for layer, g in units.groupby("layer", sort=False):
        a, b = g[NATURAL].to_numpy(float), g[METRIC].to_numpy(float)
        d = b - a
        p = float(wilcoxon(d).pvalue) if len(d) > 1 and np.any(d != 0) else np.nan
        rho = float(spearmanr(a, b).statistic) if len(d) > 2 and a.std() > 0 and b.std() > 0 else np.nan
        rows.append({"layer": layer, "depth": g["depth"].iloc[0], "units": len(g), "mis_exemplars": float(a.mean()),
                     "mis_featviz": float(b.mean()), "difference": float(d.mean()),
                     "featviz_better": float((d > 0).mean()), "wilcoxon_p": p, "spearman": rho})
    table = pd.DataFrame(rows)
    return table.sort_values("depth", kind="stable").reset_index(drop=True) if len(table) else table


def compare_explanations(atlas: Atlas | str | Path, backend: str | None = None,
                         layers: list[str] | str | None = None) -> ExplanationComparison:
    """Compare the stored MIS of natural exemplars and of feature visualisations (see the module docstring)."""
    atlas = Atlas.open(atlas)
    scores = atlas.scores()
    name = _pick_backend(scores, backend, str(atlas.path))
    mine = scores[(scores["backend"] == name) & scores["metric"].isin([NATURAL, METRIC])]
    if layers is not None:
        mine = mine[mine["layer"].isin({i.name for i in atlas.select_layers(layers)})]
    params = {m: {json.dumps({k: json.loads(p).get(k) for k in SAME}) for p in g["params"]}
              for m, g in mine.groupby("metric")}
    for metric, how in ((NATURAL, f"unitlens mis {atlas.path} --backend {name}"),
                        (METRIC, f"unitlens mis {atlas.path} --backend {name} --explanations featviz")):
        if metric not in params:
            raise NotComputed(f"atlas {atlas.path} has no {metric} of backend '{name}' for these layers; run {how}")
    tasks = params[NATURAL] | params[METRIC]
    if len(tasks) > 1:
        shown = " vs ".join(sorted(tasks))
        raise BadInput(f"the two MIS of atlas {atlas.path} were scored with different tasks ({shown}); score both with "
                       "the same --n-tasks, --k-expl and --tau")
    wide = mine.pivot_table(index=["layer", "unit"], columns="metric", values="value").reset_index()
    wide = wide.dropna(subset=[c for c in (NATURAL, METRIC) if c in wide])
    if METRIC not in wide or NATURAL not in wide or not len(wide):
        raise NotComputed(f"no unit of atlas {atlas.path} has both MIS scores (backend '{name}'); score the same "
                          f"layers both ways: unitlens mis {atlas.path} and unitlens mis {atlas.path} --explanations "
                          "featviz")
    depth = {info.name: info.depth for info in atlas.layers}
    units = wide.assign(depth=wide["layer"].map(depth), difference=wide[METRIC] - wide[NATURAL])
    units = units[["layer", "unit", "depth", NATURAL, METRIC, "difference"]].sort_values(
        ["depth", "unit"], kind="stable").reset_index(drop=True)
    shared = json.loads(next(iter(params[METRIC])))
    return ExplanationComparison(units, layer_comparison(units), name, shared)
