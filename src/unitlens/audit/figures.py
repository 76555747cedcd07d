"""The figures of an audit: ``plot_audit`` (the valid/spurious alignment scatter) and ``plot_flagged_units`` (a
sheet of the spurious and unexpected units with their images, gathered from the atlas), drawn by
``unitlens.report.audit_plots``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from unitlens.audit.alignment import AuditResult
from unitlens.errors import BadInput
from unitlens.lens.store import LensStore
from unitlens.report.audit_plots import plot_flagged, plot_scatter
from unitlens.report.figures import save_figure


def _judged(result: AuditResult) -> None:
    if result.frame.empty:
        raise BadInput(f"no unit reaches relevance {result.min_relevance:g}; nothing to plot")


def plot_audit(result: AuditResult, path: str | Path | None = None, n_labels: int = 8) -> Any:
    """Draw the audit's scatter: one dot per judged unit at (a_valid, a_spur).

    Parameters
    ----------
    result
        What ``audit_class`` returned (with at least one judged unit).
    path
        Where to save the figure as PNG (nothing is saved when None).
    n_labels
        The most relevant units named beside their dot (with the concept of their larger alignment).

    Returns
    -------
    matplotlib.figure.Figure
        Dot area ∝ relevance, colour = verdict, marker = layer.
    """
    _judged(result)
    fig = plot_scatter(result, n_labels)
    if path is not None:
        save_figure(fig, path, tight=False)
    return fig


def plot_flagged_units(result: AuditResult, path: str | Path | None = None, n_units: int = 12,
                       n_relevant: int = 3) -> Any:
    """Draw a sheet of the spurious and unexpected units, one row each, most relevant first.

    Parameters
    ----------
    result
        What ``audit_class`` returned.
    path
        Where to save the figure as PNG (nothing is saved when None).
    n_units
        The most relevant flagged units shown.
    n_relevant
        The samples most relevant for the class shown per unit (besides its ``exemplars`` concept examples).

    Returns
    -------
    matplotlib.figure.Figure or None
        Per unit its verdict, alignments and other classes, its top concept examples and its most relevant samples;
        None (and nothing saved) when no unit is flagged.
    """
    _judged(result)
    flagged = result.flagged.head(n_units)
    if flagged.empty:
        return None
    n_exemplars = result.options.exemplars
    store = LensStore.open(result.atlas, result.backend)
    dataset = store.atlas.dataset()
    images = {(row.layer, int(row.unit)): (store.example_images(row.layer, int(row.unit), n_exemplars, dataset)[0],
                                           [dataset.image(int(i)) for i in list(row.relevant_ids)[:n_relevant]])
              for row in flagged.itertuples()}
    fig = plot_flagged(result, images, n_exemplars, n_relevant)
    if path is not None:
        save_figure(fig, path, tight=False)
    return fig
