"""``plot_attribution_graph``: the figure of an attribution graph (two columns of labelled unit groups, edges as
wide as the relevance flowing between them), drawn by ``unitlens.report.graph_plots``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from unitlens.relevance.graph import UNLABELLED, GraphResult
from unitlens.report.figures import save_figure
from unitlens.report.graph_plots import plot_graph


def plot_attribution_graph(result: GraphResult, path: str | Path | None = None) -> Any:
    """Draw an attribution graph.

    Parameters
    ----------
    result
        What ``attribution_graph`` returned.
    path
        Where to save the figure as PNG (nothing is saved when None).

    Returns
    -------
    matplotlib.figure.Figure
        The lower layer's groups on the left, the upper layer's on the right, each sized by its relevance; edge
        width ∝ weight (red positive, purple negative).
    """
    fig = plot_graph(result.nodes, result.edges, result.meta, UNLABELLED)
    if path is not None:
        save_figure(fig, path, tight=False)
    return fig
