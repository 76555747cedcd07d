"""Figures of feature visualisations: MIS with visualisations against MIS with natural exemplars, per layer, and
sheets that show a unit's visualisations beside its natural exemplars.

``plot_explanation_comparison`` takes the per-unit and per-layer tables of ``featviz.compare_explanations``;
``plot_unit_sheet`` takes, per unit, a caption and four lists of images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unitlens.atlas.layout import layer_stem
from unitlens.report.figures import new_figure, save_figure

NATURAL, FEATVIZ = "mis", "mis_featviz"
COLOURS = {"exemplars": "#4c72b0", "featviz": "#dd8452"}


def comparison_file(layer: str) -> str:
    return f"mis_featviz_{layer_stem(layer)}.png"


def plot_explanation_comparison(units: pd.DataFrame, layers: pd.DataFrame, out: str | Path, title: str = ""
                                ) -> list[Path]:
    """Per layer ``mis_featviz_<layer>.png``: each unit's MIS with visualisations against with natural exemplars
    (diagonal: equal; dashed: chance), and both distributions side by side with every unit's pair joined; and
    ``mis_featviz_by_layer.png``: both layer means in depth order. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in layers.itertuples(index=False):
        g = units[units["layer"] == row.layer]
        a, b = g[NATURAL].to_numpy(float), g[FEATVIZ].to_numpy(float)
        fig = new_figure(9.5, 4.2)
        left, right = fig.subplots(1, 2)
        lo = float(min(a.min(), b.min(), 0.5)) - 0.02
        hi = float(max(a.max(), b.max(), 0.5)) + 0.02
        left.plot([lo, hi], [lo, hi], color="grey", linewidth=1, label="equal")
        left.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        left.axvline(0.5, color="grey", linestyle="--", linewidth=0.8, label="chance")
        better = b > a
        left.scatter(a[better], b[better], s=14, color=COLOURS["featviz"], alpha=0.8,
                     label=f"visualisations better ({int(better.sum())})")
        left.scatter(a[~better], b[~better], s=14, color=COLOURS["exemplars"], alpha=0.8,
                     label=f"exemplars better or equal ({int((~better).sum())})")
        left.set_xlim(lo, hi)
        left.set_ylim(lo, hi)
        left.set_xlabel("MIS, natural exemplars as explanations")
        left.set_ylabel("MIS, feature visualisations as explanations")
        left.legend(fontsize=7, frameon=False, loc="upper left")
        left.set_title(f"per unit (Spearman ρ {row.spearman:.2f})", fontsize=9)
        for x0, x1 in zip(a, b):
            right.plot([0, 1], [x0, x1], color="grey", alpha=0.15, linewidth=0.6)
        parts = right.violinplot([a, b], positions=[0, 1], widths=0.6, showmeans=True, showextrema=False)
        for body, key in zip(parts["bodies"], ("exemplars", "featviz")):
            body.set_facecolor(COLOURS[key])
            body.set_alpha(0.55)
        right.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        right.set_xticks([0, 1], [f"exemplars\nmean {a.mean():.3f}", f"visualisations\nmean {b.mean():.3f}"])
        right.set_ylabel("MIS per unit")
        p = "n/a" if not np.isfinite(row.wilcoxon_p) else f"{row.wilcoxon_p:.2g}"
        right.set_title(f"{len(a)} units: difference {row.difference:+.3f}, Wilcoxon p {p}", fontsize=9)
        fig.suptitle(f"{row.layer}" + (f" · {title}" if title else ""), fontsize=10)
        paths.append(save_figure(fig, out / comparison_file(row.layer)))
    if len(layers) > 1:
        fig = new_figure(max(6.0, 0.5 * len(layers) + 3), 4.0)
        ax = fig.add_subplot()
        x = np.arange(len(layers))
        ax.plot(x, layers["mis_exemplars"], "o-", color=COLOURS["exemplars"], label="natural exemplars")
        ax.plot(x, layers["mis_featviz"], "s-", color=COLOURS["featviz"], label="feature visualisations")
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xticks(x, layers["layer"], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("mean MIS of the layer's units")
        ax.legend(frameon=False, fontsize=8)
        ax.set_title("MIS by explanation kind, layers in depth order" + (f"\n{title}" if title else ""), fontsize=10)
        paths.append(save_figure(fig, out / "mis_featviz_by_layer.png"))
    return paths


def plot_unit_sheet(units: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One block per unit: rows of its visualisations that drive it up, its most activating natural images, its
    visualisations that drive it down and its least activating natural images. ``units``: dicts with ``caption``
    and the image lists ``featviz_top``, ``natural_top``, ``featviz_bottom``, ``natural_bottom`` (PIL images)."""
    rows = [("featviz_top", "visualisations ↑"), ("natural_top", "exemplars ↑"),
            ("featviz_bottom", "visualisations ↓"), ("natural_bottom", "exemplars ↓")]
    cols = max(max(len(u[key]) for key, _ in rows) for u in units)
    height = 1.0 * 4 * len(units) + 0.25 * (len(units) - 1) + (0.65 if title else 0.1)
    fig = new_figure(1.0 * cols + 1.6, height)
    # one block of four rows per unit, a thin spacer row between blocks
    ratios = [r for b in range(len(units)) for r in ([1.0] * 4 + ([0.25] if b < len(units) - 1 else []))]
    grid = fig.add_gridspec(len(ratios), cols + 1, width_ratios=[1.6] + [1.0] * cols, height_ratios=ratios,
                            left=0.01, right=0.99, bottom=0.05 / height, top=1 - (0.6 if title else 0.05) / height,
                            hspace=0.06, wspace=0.04)
    for b, unit in enumerate(units):
        for r, (key, label) in enumerate(rows):
            row = 5 * b + r
            ax = fig.add_subplot(grid[row, 0])
            ax.axis("off")
            text = (unit["caption"] + "\n" if r == 0 else "") + label
            ax.text(1.0, 0.5, text, ha="right", va="center", fontsize=7, transform=ax.transAxes)
            for c, image in enumerate(unit[key]):
                ax = fig.add_subplot(grid[row, c + 1])
                ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_edgecolor(COLOURS["featviz" if key.startswith("featviz") else "exemplars"])
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, tight=False)


def plot_study_explanations(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Per study entry (a row of the study table with ``mis_exemplars_same_units`` and ``mis_featviz_mean``): mean
    MIS of the same units with natural exemplars and with feature visualisations as explanations, joined."""
    rows = table.dropna(subset=["mis_featviz_mean", "mis_exemplars_same_units"]).reset_index(drop=True)
    fig = new_figure(7.0, max(2.5, 0.35 * len(rows) + 1.5))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    for i, r in rows.iterrows():
        ax.plot([r["mis_exemplars_same_units"], r["mis_featviz_mean"]], [i, i], color="grey", linewidth=1)
    ax.scatter(rows["mis_exemplars_same_units"], y, color=COLOURS["exemplars"], label="natural exemplars", zorder=3)
    ax.scatter(rows["mis_featviz_mean"], y, color=COLOURS["featviz"], marker="s", label="feature visualisations",
               zorder=3)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yticks(y, [f"{e} ({int(n)} units)" for e, n in zip(rows["entry"], rows["featviz_units"])], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean MIS of the visualised units")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("explanations: natural exemplars vs feature visualisations" + (f"\n{title}" if title else ""),
                 fontsize=10)
    return save_figure(fig, path)
