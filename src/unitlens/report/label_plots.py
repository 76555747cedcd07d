"""The label-faithfulness figure: held-out AUC of every label, per method (box and points) and layer (one panel
each), with the chance level, the 0.9 bar and each method's labelled share; drawn from the tables that
``unitlens.probe.faithfulness.evaluate_labels`` hands over (``unitlens.probe.figures.plot_label_faithfulness``
gathers them)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from unitlens.report.figures import new_figure


def draw_label_faithfulness(units: pd.DataFrame, summary: pd.DataFrame, title: str = "", good: float = 0.9) -> Any:
    """The figure (a matplotlib ``Figure``); ``units``: method, layer, label, auc per unit; ``summary``: method,
    layer, labelled_share, mean_auc."""
    layers = list(dict.fromkeys(units["layer"]))
    methods = list(dict.fromkeys(units["method"]))
    fig = new_figure(max(4.5, 1.2 * len(methods) + 1.5) * len(layers), 4.6)
    rng = np.random.default_rng(0)
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(1, len(layers), i + 1)
        data = []
        for m in methods:
            g = units[(units["layer"] == layer) & (units["method"] == m) & (units["label"] != "none")]
            data.append(g["auc"].dropna().to_numpy())
        positions = np.arange(1, len(methods) + 1)
        shown = [d if len(d) else np.array([np.nan]) for d in data]
        ax.boxplot(shown, positions=positions, widths=0.55, showfliers=False)
        for p, d in zip(positions, data):
            ax.scatter(p + rng.uniform(-0.18, 0.18, len(d)), d, s=5, alpha=0.35, color="tab:blue", linewidths=0)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.axhline(good, color="tab:green", linestyle="--", linewidth=1)
        for p, m in zip(positions, methods):
            row = summary[(summary["layer"] == layer) & (summary["method"] == m)]
            if len(row):
                r = row.iloc[0]
                ax.text(p, 1.02, f"{r['labelled_share']:.0%}\nμ {r['mean_auc']:.2f}", ha="center", va="bottom",
                        fontsize=7, transform=ax.get_xaxis_transform())
        ax.set_xticks(positions, methods, rotation=20, fontsize=8)
        ax.set_ylim(0, 1.0)
        ax.set_ylabel("held-out AUC of the label" if i == 0 else "")
        ax.set_title(layer, fontsize=9, pad=26)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
