"""``plot_label_faithfulness(result)``: the figure of an ``evaluate_labels`` result — held-out AUC of every label per
method and layer, with the chance level, the 0.9 bar and each method's labelled share (drawn by
``unitlens.report.label_plots``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from unitlens.probe.defaults import GOOD_AUC
from unitlens.report.figures import save_figure
from unitlens.report.label_plots import draw_label_faithfulness

if TYPE_CHECKING:
    from unitlens.probe.faithfulness import Faithfulness


def plot_label_faithfulness(result: Faithfulness, path: str | Path | None = None, title: str | None = None) -> Any:
    """Draw the faithfulness of ``result``'s labels.

    Parameters
    ----------
    result
        What ``evaluate_labels`` returned.
    path
        Where to save the figure as PNG (atomically); None: not saved.
    title
        The figure's title (default: the atlas and the number of held-out probe images).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    if title is None:
        title = f"held-out label faithfulness, {result.atlas} ({result.split['n_heldout']} held-out probe images)"
    fig = draw_label_faithfulness(result.units, result.summary, title, GOOD_AUC)
    if path is not None:
        save_figure(fig, path, tight=False)
    return fig
