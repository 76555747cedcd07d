"""The figure canvas every plot draws on, and its atomic save.

Figures use matplotlib's object API on Agg canvases (no pyplot, no global backend switch), so drawing works on
headless machines and inside programs that use another matplotlib backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from unitlens.atlas.files import atomic_write

DPI = 110


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Lay ``fig`` out (unless ``tight`` is false) and write it as PNG to ``path`` atomically."""
    path = Path(path)
    if tight:
        fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path


def type_colours(types: Any) -> dict:
    """One tab10 colour per layer type (sorted), the same in every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {t: cmap(i % 10) for i, t in enumerate(sorted(types))}
