"""MIS figures of one atlas: per-unit distribution, per-layer means by depth, and trends over depth and width.

``plot_mis`` takes the per-unit frame (``unitlens.mis.load_scores``) and its per-layer summary
(``unitlens.mis.summarize(frame)["layer"]``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from unitlens.errors import BadInput
from unitlens.options import takes_options
from unitlens.report.figures import new_figure, save_figure, type_colours
from unitlens.report.options import MISPlotOptions

SCORED = "scored"  # the status of units that were scored (the others are constant or non-finite)
FILES = {"hist": "mis_hist.png", "layers": "mis_by_layer.png", "depth": "mis_vs_rel_depth.png",
         "width": "mis_vs_rel_width.png"}


@takes_options(MISPlotOptions)
def plot_mis(frame: pd.DataFrame, layers: pd.DataFrame, out: str | Path, title: str | None = None,
             options: MISPlotOptions | None = None) -> list[Path]:
    """Write the MIS figures of a per-unit frame (as ``score_mis(...).frame`` and ``load_scores`` return) and its
    per-layer summary (``summarize(frame)["layer"]``) into ``out``.

    Files: ``mis_hist.png`` (per-unit MIS histogram), ``mis_by_layer.png`` (layers in depth order, mean with
    5–95 % bars, coloured by layer type), ``mis_vs_rel_depth.png`` and ``mis_vs_rel_width.png`` (layer means
    against relative depth and relative width).

    Parameters
    ----------
    frame
        The per-unit MIS frame (as ``score_mis(...).frame`` and ``load_scores`` return it).
    layers
        Its per-layer summary (``summarize(frame)["layer"]``) of the backend drawn.
    out
        The folder to write the PNG files to (made if missing).
    title
        The figures' title (the model's name).
    options
        Which backend's rows of ``frame`` are drawn (``MISPlotOptions``; keyword arguments override its fields).

    Returns
    -------
    list of Path
        The files written.
    """
    assert options is not None  # takes_options fills it
    frame = _one_backend(frame, options.backend)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scored = frame[frame["status"] == SCORED] if "status" in frame else frame[frame["mis"].notna()]
    if scored.empty:
        raise BadInput("no scored unit to plot (all units are constant or non-finite, or none was scored)")
    layers = layers.dropna(subset=["mis_mean"])
    colours = type_colours(frame["type"].unique())
    backend = str(frame["backend"].iloc[0]) if "backend" in frame else ""
    taus = sorted(pd.to_numeric(frame["tau"], errors="coerce").dropna().unique()) if "tau" in frame else []
    tau = f"τ = {', '.join(f'{t:g}' for t in taus)}" if taus else ""
    tag = " · ".join(x for x in (title, f"backend {backend}" if backend else "", tau) if x)
    excluded = len(frame) - len(scored)
    paths = []

    fig = new_figure(7, 4.2)
    ax = fig.add_subplot()
    v = scored["mis"].to_numpy(float)
    lo, hi = min(v.min(), 0.5), max(v.max(), 0.5)
    pad = max(0.02, 0.05 * (hi - lo))
    ax.hist(v, bins=np.linspace(max(0.0, lo - pad), min(1.0, hi + pad), 61), color="#4c72b0", edgecolor="white",
            linewidth=0.3)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (0.5)")
    ax.axvline(v.mean(), color="#c44e52", linewidth=1.5, label=f"mean {v.mean():.3f}")
    ax.set_xlabel("MIS per unit")
    ax.set_ylabel("units")
    ax.set_title(f"MIS of {len(v)} units ({excluded} constant/non-finite excluded)\n{tag}", fontsize=10)
    ax.legend(frameon=False)
    paths.append(save_figure(fig, out / FILES["hist"]))

    n = len(layers)
    fig = new_figure(min(max(7.0, 0.16 * n + 2), 30.0), 5.0)
    ax = fig.add_subplot()
    x = np.arange(n)
    for t, g in layers.groupby("type"):
        pos = x[layers.index.get_indexer(g.index)]
        yerr = np.vstack([g["mis_mean"] - g["mis_p5"], g["mis_p95"] - g["mis_mean"]])
        ax.errorbar(pos, g["mis_mean"], yerr=yerr, fmt="o", ms=3.5, color=colours[t], ecolor=colours[t],
                    elinewidth=0.8, capsize=0, alpha=0.9, label=t)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(layers["layer"], rotation=90, fontsize=5 if n > 40 else 7)
    ax.set_xlim(-1, n)
    ax.set_ylabel("MIS (layer mean, 5–95 % of units)")
    ax.set_title(f"MIS by layer, in depth order\n{tag}", fontsize=10)
    ax.legend(frameon=False, fontsize=8, ncol=min(len(colours), 5))
    paths.append(save_figure(fig, out / FILES["layers"]))

    for key, col, label in (("depth", "rel_depth", "relative depth"), ("width", "rel_width", "relative width")):
        fig = new_figure(6.5, 4.2)
        ax = fig.add_subplot()
        data = layers[np.isfinite(pd.to_numeric(layers[col], errors="coerce").to_numpy(float))]
        for t, g in data.groupby("type"):
            g = g.sort_values(col)
            ax.plot(g[col], g["mis_mean"], "o-" if key == "depth" else "o", ms=4, linewidth=0.8,
                    color=colours[t], alpha=0.85, label=t)
        if key == "depth" and len(data) > 1:
            order = data.sort_values(col)
            ax.plot(order[col], order["mis_mean"].rolling(5, center=True, min_periods=1).mean(),
                    color="black", linewidth=1.5, label="all layers (running mean of 5)")
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("mean MIS of the layer")
        ax.set_title(f"mean MIS vs {label}\n{tag}", fontsize=10)
        ax.legend(frameon=False, fontsize=8)
        paths.append(save_figure(fig, out / FILES[key]))
    return paths


def _one_backend(frame: pd.DataFrame, backend: str | None) -> pd.DataFrame:
    """The rows of ``backend`` (a frame without a ``backend`` column is one backend's); several backends and none
    chosen is an error naming them."""
    if "backend" not in frame:
        return frame
    found = sorted(frame["backend"].dropna().astype(str).unique())
    if backend is None:
        if len(found) > 1:
            raise BadInput(f"the MIS frame holds scores of several backends {found}; choose one with backend= "
                           "(--backend)")
        return frame
    if backend not in found:
        raise BadInput(f"the MIS frame has no scores of backend '{backend}'; it has {found}")
    return frame[frame["backend"] == backend]
