"""``plot_basis_comparison(result)``: the figure of a ``compare_bases`` result — MIS (and clarity) of the layer's
channels and of each basis, and the shares of units above chance and with a label (drawn by
``unitlens.report.basis_plots``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from unitlens.basis.compare import BasisComparison
from unitlens.report.basis_plots import draw_basis_comparison
from unitlens.report.figures import save_figure


def plot_basis_comparison(result: BasisComparison, path: str | Path | None = None, title: str | None = None) -> Any:
    """Draw the comparison of a layer's channels with its bases.

    Parameters
    ----------
    result
        What ``compare_bases`` returned.
    path
        Where to save the figure as PNG (atomically); None: not saved.
    title
        The figure's title (default: the layer and the backends of its scores).

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    if title is None:
        title = f"{result.layer} · MIS {result.backend or '-'} · lens {result.lens_backend or '-'}"
    fig = draw_basis_comparison(result.mis, result.table, title, result.clarity, result.mis_nonsparse,
                                label_name=f"a {result.labels} label" if result.labels else "a label")
    if path is not None:
        save_figure(fig, path, tight=False)
    return fig
