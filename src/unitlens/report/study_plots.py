"""Study figures (the MIS paper): model ranking, per-unit distributions, MIS vs accuracy, MIS by layer type, MIS vs
relative depth and width, the worst units, and for checkpoint studies MIS over training and its per-layer change.

``plot_study_figures`` takes the tables ``unitlens.study.figures.study_figures_data`` gathers: the study table (one
row per entry), the scored units (entry, layer, type, rel_depth, rel_width, mis), the per-layer means, correlations,
and for checkpoint studies the run's epochs and the per-layer change between epochs.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens.errors import BadInput
from unitlens.report.figures import new_figure, save_figure, type_colours

FILES = {"ranking": "study_ranking.png", "distributions": "study_distributions.png",
         "accuracy": "study_mis_vs_accuracy.png", "types": "study_by_type.png", "depth": "study_vs_rel_depth.png",
         "width": "study_vs_rel_width.png", "worst": "study_worst_units.png", "training": "study_training.png",
         "change": "study_layer_change_epoch{epoch}.png", "change_all": "study_layer_change.png"}
CHANCE = 0.5


def _r(corr: dict) -> str:
    if "pearson" not in corr:
        return f"n = {corr.get('n', 0)}: too few for a correlation"
    return f"Pearson r = {corr['pearson']:.2f}, Spearman r = {corr['spearman']:.2f} (n = {corr['n']})"


def _ranked(table: pd.DataFrame, column: str) -> pd.DataFrame:
    return table[table[column].notna()].sort_values(column, ascending=False, kind="stable").reset_index(drop=True)


def _entry_axis(ax, names: list[str]) -> None:
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7 if len(names) > 12 else 8)
    ax.set_xlim(-0.7, len(names) - 0.3)


def _ranked_figure(ranked: pd.DataFrame, title: str, path: Path, draw: Callable) -> Path:
    """Entries along x in ``ranked``'s order, per-unit MIS up: ``draw(ax, x)`` adds the series; chance, the entry
    names, the axis label, ``title`` and the legend are added here."""
    fig = new_figure(max(6.0, 0.35 * len(ranked) + 2.5), 4.4)
    ax = fig.add_subplot()
    draw(ax, np.arange(len(ranked)))
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=0.8)
    _entry_axis(ax, list(ranked["entry"]))
    ax.set_ylabel("per-unit MIS")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


def _ranking(table: pd.DataFrame, tag: str, path: Path) -> Path:
    ranked = _ranked(table, "mis_mean")

    def draw(ax, x):
        ax.fill_between(x, ranked["mis_p5"], ranked["mis_p95"], color="#4c72b0", alpha=0.2,
                        label="5th–95th percentile")
        ax.plot(x, ranked["mis_mean"], "o-", color="#4c72b0", ms=4, label="mean over units")

    return _ranked_figure(ranked, f"Entries ranked by mean MIS (the MIS paper, fig. 3)\n{tag}", path, draw)


def _distributions(table: pd.DataFrame, units: pd.DataFrame, tag: str, path: Path) -> Path:
    ranked = table[table["mis_mean"].notna()].assign(spread=lambda t: t["mis_p95"] - t["mis_p5"])
    ranked = ranked.sort_values("spread", kind="stable").reset_index(drop=True)
    per = max(1, min(3, len(ranked) // 3))
    mid = len(ranked) // 2
    picks = {"least variable": ranked.head(per), "median": ranked.iloc[max(0, mid - per // 2):][:per],
             "most variable": ranked.tail(per)} if len(ranked) >= 3 else {"all": ranked}
    rows, per = len(picks), max(len(chosen) for chosen in picks.values())
    fig = new_figure(3.0 * per + 1.0, 2.3 * rows + 0.6)
    lo, hi = min(float(units["mis"].min()), CHANCE), float(units["mis"].max())
    pad = 0.03 * (hi - lo) or 0.01
    bins = np.linspace(lo - pad, hi + pad, 41)  # one range for every panel, so their shapes compare
    for i, (group, chosen) in enumerate(picks.items()):
        for j, row in enumerate(chosen.itertuples(index=False)):
            ax = fig.add_subplot(rows, per, i * per + j + 1)
            v = units.loc[units["entry"] == row.entry, "mis"].to_numpy(float)
            ax.hist(v, bins=bins, color="#55a868", edgecolor="white", linewidth=0.3)
            ax.axvline(CHANCE, color="grey", linestyle="--", linewidth=0.8)
            ax.set_title(f"{row.entry}\n{group}: p5–p95 {row.mis_p5:.2f}–{row.mis_p95:.2f}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"Per-unit MIS of the least, median and most variable entries (fig. 4B)\n{tag}", fontsize=10)
    return save_figure(fig, path)


def _accuracy(table: pd.DataFrame, corr: dict, tag: str, path: Path) -> Path:
    data = table[table["accuracy"].notna() & table["mis_mean"].notna()]
    fig = new_figure(5.8, 4.4)
    ax = fig.add_subplot()
    for weights, marker in (("pretrained", "o"), ("checkpoint", "s"), ("random", "x")):
        g = data[data["weights"] == weights]
        if len(g):
            ax.scatter(g["accuracy"], g["mis_mean"], marker=marker, s=30, label=weights)
    for row in data.itertuples(index=False):
        ax.annotate(row.entry, (row.accuracy, row.mis_mean), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("accuracy (top-1)")
    ax.set_ylabel("mean per-unit MIS")
    ax.set_title(f"MIS vs accuracy (fig. 4A): {_r(corr)}\n{tag}", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


def _by_type(table: pd.DataFrame, units: pd.DataFrame, tag: str, path: Path) -> Path:
    ranked = _ranked(table, "mis_mean")
    colours = type_colours(units["type"].unique())
    means = units.groupby(["entry", "type"])["mis"].mean()
    fig = new_figure(max(6.0, 0.35 * len(ranked) + 2.5), 4.4)
    ax = fig.add_subplot()
    for t in sorted(colours):
        x = [i for i, e in enumerate(ranked["entry"]) if (e, t) in means.index]
        y = [means[(ranked["entry"][i], t)] for i in x]
        ax.plot(x, y, "o", ms=5, color=colours[t], label=t, alpha=0.85)
    ax.plot(np.arange(len(ranked)), ranked["mis_mean"], "-", color="black", linewidth=1, label="all units")
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=0.8)
    _entry_axis(ax, list(ranked["entry"]))
    ax.set_ylabel("mean MIS of the layer type")
    ax.set_title(f"MIS by layer type, entries ranked by mean MIS (fig. 5)\n{tag}", fontsize=10)
    ax.legend(frameon=False, fontsize=8, ncol=min(len(colours) + 1, 6))
    return save_figure(fig, path)


def _binned(layers: pd.DataFrame, column: str, bins: int, label: str, fig_name: str, tag: str, path: Path) -> Path:
    colours = type_colours(layers["type"].unique())
    fig = new_figure(6.2, 4.2)
    ax = fig.add_subplot()
    data = layers[np.isfinite(pd.to_numeric(layers[column], errors="coerce").to_numpy(float))]
    for t, g in data.groupby("type"):
        q = min(bins, g[column].nunique())
        if q < 1:
            continue
        codes = pd.qcut(g[column].rank(method="first"), q=q, labels=False) if q > 1 else np.zeros(len(g), int)
        binned = g.assign(bin=codes).groupby("bin").agg(x=(column, "mean"), y=("mis_mean", "mean"), n=("mis_mean",
                                                                                                     "size"))
        ax.plot(binned["x"], binned["y"], "o-", ms=4, linewidth=1, color=colours[t],
                label=f"{t} ({len(g)} layers, {q} bins)")
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel(label)
    ax.set_ylabel("mean MIS per layer (bin average)")
    ax.set_title(f"MIS vs {label}, equal-count bins per layer type ({fig_name})\n{tag}", fontsize=10)
    ax.legend(frameon=False, fontsize=7)
    return save_figure(fig, path)


def _worst(table: pd.DataFrame, tag: str, path: Path) -> Path:
    ranked = _ranked(table, "mis_p5")

    def draw(ax, x):
        ax.plot(x, ranked["mis_p5"], "o-", color="#c44e52", ms=4, label="5th percentile of units")
        ax.plot(x, ranked["mis_worst5"], "v", color="#8172b2", ms=4, label="mean of the worst 5 % of units")
        ax.plot(x, ranked["mis_mean"], "o", color="#4c72b0", ms=3, alpha=0.6, label="mean (for reference)")

    return _ranked_figure(ranked, f"Entries ranked by their worst units (fig. 19)\n{tag}", path, draw)


def _training(training: pd.DataFrame, corr: dict, tag: str, path: Path) -> Path:
    fig = new_figure(11, 4.2)
    ax = fig.add_subplot(1, 2, 1)
    ax.fill_between(training["epoch"], training["mis_p5"], training["mis_p95"], color="#4c72b0", alpha=0.15,
                    label="MIS 5th–95th percentile")
    ax.plot(training["epoch"], training["mis_mean"], "o-", color="#4c72b0", label="mean MIS")
    ax.set_xlabel("epoch (0 = initialisation)")
    ax.set_ylabel("per-unit MIS", color="#4c72b0")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    if training["accuracy"].notna().any():
        twin = ax.twinx()
        twin.plot(training["epoch"], training["accuracy"], "s--", color="#dd8452", label="accuracy")
        twin.set_ylabel("held-out top-1 accuracy", color="#dd8452")
    ax.set_title("MIS and accuracy per epoch (fig. 8, left)", fontsize=10)
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(training["accuracy"], training["mis_mean"], "-", color="grey", linewidth=0.8)
    points = ax.scatter(training["accuracy"], training["mis_mean"], c=training["epoch"], cmap="viridis", s=35)
    fig.colorbar(points, ax=ax, label="epoch")
    ax.set_xlabel("held-out top-1 accuracy")
    ax.set_ylabel("mean per-unit MIS")
    ax.set_title(f"MIS vs accuracy over training (fig. 8, right)\nepochs ≥ 1: {_r(corr)}", fontsize=9)
    fig.suptitle(tag, fontsize=9)
    return save_figure(fig, path)


def _change(change: pd.DataFrame, epoch: int, tag: str, path: Path) -> Path:
    one = change[change["epoch"] == epoch].sort_values("depth")
    colours = type_colours(change["type"].unique())
    fig = new_figure(max(6.0, 0.18 * len(one) + 2.5), 4.4)
    ax = fig.add_subplot()
    x = np.arange(len(one))
    ax.bar(x, one["change"].fillna(0.0), color=[colours[t] for t in one["type"]])
    for t in sorted(colours):
        ax.bar([np.nan], [np.nan], color=colours[t], label=t)
    missing = one["change"].isna().to_numpy()
    if missing.any():  # a layer whose units were constant (unscored) at one of the two epochs has no change
        ax.plot(x[missing], np.zeros(missing.sum()), "x", color="black", label="no MIS at one of the epochs")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(one["layer"], rotation=90, fontsize=5 if len(one) > 40 else 7)
    ax.set_ylabel(f"Δ mean MIS, epoch {epoch} − previous")
    ax.set_title(f"Change of MIS per layer in epoch {epoch}, layers by depth (fig. 7)\n{tag}", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


def _change_all(change: pd.DataFrame, tag: str, path: Path) -> Path:
    wide = change.pivot_table(index=["depth", "layer"], columns="epoch", values="change").sort_index()
    fig = new_figure(max(5.0, 0.5 * wide.shape[1] + 3), max(4.0, 0.14 * len(wide) + 1.5))
    ax = fig.add_subplot()
    lim = float(np.nanmax(np.abs(wide.to_numpy()))) or 1.0
    im = ax.imshow(wide.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(np.arange(wide.shape[1]))
    ax.set_xticklabels([str(int(e)) for e in wide.columns])
    ax.set_yticks(np.arange(len(wide)))
    ax.set_yticklabels([layer for _, layer in wide.index], fontsize=5 if len(wide) > 40 else 7)
    ax.set_xlabel("epoch")
    fig.colorbar(im, ax=ax, label="Δ mean MIS vs previous epoch")
    ax.set_title(f"Change of MIS per layer over training (fig. 18)\n{tag}", fontsize=10)
    return save_figure(fig, path)


def plot_study_figures(table: pd.DataFrame, units: pd.DataFrame, layers: pd.DataFrame, out: str | Path,
                       title: str = "", correlation: dict | None = None, training: pd.DataFrame | None = None,
                       training_correlation: dict | None = None, change: pd.DataFrame | None = None,
                       epoch: int | None = None, depth_bins: int = 30, width_bins: int = 5) -> list[Path]:
    """Write the study figures (``FILES``) into ``out``; the training figures only when ``training`` is given.
    Returns the paths written."""
    if units.empty:
        raise BadInput("no scored unit to plot: the study has no MIS scores yet")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backends = sorted(set(table["mis_backend"].dropna()))
    tag = " · ".join(x for x in (title, f"{len(table)} entries", f"MIS backend {', '.join(backends)}") if x)
    paths = [
        _ranking(table, tag, out / FILES["ranking"]),
        _distributions(table, units, tag, out / FILES["distributions"]),
        _accuracy(table, correlation or {}, tag, out / FILES["accuracy"]),
        _by_type(table, units, tag, out / FILES["types"]),
        _binned(layers, "rel_depth", depth_bins, "relative depth", "fig. 6A", tag, out / FILES["depth"]),
        _binned(layers, "rel_width", width_bins, "relative width", "fig. 6B", tag, out / FILES["width"]),
        _worst(table, tag, out / FILES["worst"]),
    ]
    if training is not None and len(training) >= 2:
        paths.append(_training(training, training_correlation or {}, tag, out / FILES["training"]))
        if change is not None and epoch is not None:
            paths.append(_change(change, epoch, tag, out / FILES["change"].format(epoch=epoch)))
            paths.append(_change_all(change, tag, out / FILES["change_all"]))
    return paths
