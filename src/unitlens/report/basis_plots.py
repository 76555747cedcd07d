"""The basis comparison figure: MIS of a layer's channels and of each basis, and their shares.

``draw_basis_comparison`` takes the per-unit MIS values of every unit set (``BasisComparison.mis``), optionally
their clarity values, and the comparison table (``BasisComparison.table``); ``unitlens.basis.figures.
plot_basis_comparison`` hands them over.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from unitlens.report.figures import new_figure


def draw_basis_comparison(mis: dict[str, np.ndarray], table: pd.DataFrame, title: str = "",
                          clarity: dict[str, np.ndarray] | None = None,
                          mis_nonsparse: dict[str, np.ndarray] | None = None, label_name: str = "a label") -> Any:
    """Violins of MIS per unit set (chance at 0.5, means marked; beside them, where a set has sparse units, the MIS
    of its other units), violins of clarity where measured, and the shares of units above chance and with a label
    (``label_name`` says which); a matplotlib ``Figure``."""
    names = list(mis)
    clarity = {k: v for k, v in (clarity or {}).items() if len(v)}
    dense = {k: v for k, v in (mis_nonsparse or {}).items() if 1 < len(v) < len(mis.get(k, []))}
    panels = 3 if clarity else 2
    fig = new_figure(4.2 * panels, 4.0)
    axes = fig.subplots(1, panels)
    ax = axes[0]
    shift = 0.2 if dense else 0.0
    for values, offset, colour, label in ((mis, -shift, "#4c72b0", "all scored units"),
                                          (dense, shift, "#55a868", "without sparse units")):
        with_data = [(i, values[n]) for i, n in enumerate(names) if n in values and len(values[n]) > 1]
        if not with_data:
            continue
        parts = ax.violinplot([v for _, v in with_data], positions=[i + offset for i, _ in with_data],
                              widths=0.4 if dense else 0.7, showmeans=True, showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor(colour)
            body.set_alpha(0.55)
        parts["cmeans"].set_color(colour)
        if dense:
            ax.plot([], [], color=colour, linewidth=6, alpha=0.55, label=label)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("MIS")
    ax.set_title("MIS per unit")
    ax.legend(loc="lower right", fontsize=7)
    k = 1
    if clarity:
        ax = axes[k]
        keys = [n for n in names if n in clarity and len(clarity[n]) > 1]
        if keys:
            ax.violinplot([clarity[n] for n in keys], positions=[names.index(n) for n in keys], showmeans=True,
                          showextrema=False)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylabel("clarity")
        ax.set_title("SemanticLens clarity per unit")
        k += 1
    ax = axes[k]
    x = np.arange(len(names))
    rows = table.set_index("basis").reindex(names)
    ax.bar(x - 0.2, rows["above_chance"].to_numpy(float), 0.4, label="MIS > 0.5", color="#4c72b0")
    ax.bar(x + 0.2, rows["label_share"].to_numpy(float), 0.4, label=f"with {label_name}", color="#dd8452")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of units")
    ax.set_title("shares")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
