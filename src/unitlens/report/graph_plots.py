"""The attribution-graph figure (the SemanticLens paper, supplementary D.5): labelled unit groups of two layers
and the relevance flowing between them, drawn from the graph's node and edge tables."""
from __future__ import annotations

from typing import Any

import pandas as pd

from unitlens.report.figures import new_figure


def plot_graph(nodes: pd.DataFrame, edges: pd.DataFrame, meta: dict, unlabelled: str = "?") -> Any:
    """Two columns of nodes (lower layer left, upper right), sized by relevance; edge width ∝ weight; a matplotlib
    ``Figure``, laid out.

    ``nodes``: id, layer, label, units, relevance; ``edges``: source (upper node id), target, weight; ``meta``:
    lower, upper, class_index, class_name, n_samples.
    """
    cols = {meta["lower"]: 0.0, meta["upper"]: 1.0}
    pos = {}
    height = max(nodes.groupby("layer").size().max(), 2)
    fig = new_figure(8.0, 0.55 * height + 1.6)
    ax = fig.add_subplot(1, 1, 1)
    for layer, x in cols.items():
        rows = nodes[nodes["layer"] == layer].sort_values("relevance", ascending=False)
        for k, row in enumerate(rows.itertuples()):
            y = 1.0 - (k + 0.5) / len(rows)
            pos[row.id] = (x, y)
            ax.scatter([x], [y], s=60 + 1200 * max(row.relevance, 0), color="tab:blue" if row.label != unlabelled
                       else "tab:grey", zorder=3)
            ax.text(x + (0.06 if x else -0.06), y, f"{row.label} ({100 * row.relevance:.1f} %, {len(row.units)} u)",
                    ha="left" if x else "right", va="center", fontsize=8)
        ax.text(x, 1.04, layer, ha="center", fontsize=9, weight="bold")
    top = max(float(edges["weight"].abs().max()) if len(edges) else 0.0, 1e-12)
    for e in edges.itertuples():
        if abs(e.weight) < 0.01 * top:
            continue
        (x0, y0), (x1, y1) = pos[e.target], pos[e.source]
        ax.plot([x0, x1], [y0, y1], color="tab:red" if e.weight > 0 else "tab:purple", alpha=0.6,
                linewidth=0.3 + 8 * abs(e.weight) / top, zorder=1)
    ax.set_xlim(-0.9, 1.9)
    ax.set_ylim(-0.05, 1.1)
    ax.axis("off")
    ax.set_title(f"attribution graph for class {meta['class_index']} ({meta['class_name']}), "
                 f"{meta['n_samples']} samples; edge width ∝ relevance share", fontsize=9)
    fig.tight_layout()
    return fig
