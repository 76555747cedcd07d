"""Audit figures: the valid/spurious alignment scatter of the SemanticLens paper, fig. 3a (middle), and a sheet of
the spurious and unexpected units with their concept examples, their most relevant samples and the other classes
they serve.

Both draw an audit result (``unitlens.audit.AuditResult``: its tables and class) and the images they are given, as
laid-out matplotlib figures; ``unitlens.audit.figures`` gathers those images from the atlas and saves them.
"""
from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from unitlens.report.figures import new_figure

COLOURS = {"valid": "#55a868", "spurious": "#c44e52", "both": "#dd8452", "unexpected": "#8c8c8c"}


MARKERS = "osD^vP*X"
OFFSETS = ((6, 4), (6, -11), (-6, 4), (-6, -11), (6, 12), (-6, 12), (6, -19), (-6, -19))  # points, label at a dot


def _unit_name(layer: str, unit: int, several_layers: bool) -> str:
    return f"{layer} #{unit}" if several_layers else f"#{unit}"


def _place_labels(fig, ax, labels: list[tuple[float, float, str]]) -> None:
    """Annotate each (x, y, text), trying a few offsets around the dot and keeping the first whose text box
    overlaps no earlier label and stays inside the axes (else the last one tried)."""
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    placed: list = []
    for x, y, text in labels:
        for dx, dy in OFFSETS:
            ann = ax.annotate(text, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset points",
                              ha="left" if dx > 0 else "right", zorder=4)
            box = ann.get_window_extent(renderer)
            free = not any(box.overlaps(b) for b in placed)
            if free and inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1:
                break
            if (dx, dy) != OFFSETS[-1]:
                ann.remove()
        placed.append(box)


def plot_scatter(result, n_labels: int = 8) -> Any:
    """x = a_valid, y = a_spur, one dot per relevant unit, area ∝ relevance, colour = verdict, marker = layer;
    the ``n_labels`` most relevant units are named with the concept of their larger alignment (none for
    unexpected units) and their relevance."""
    from matplotlib.lines import Line2D

    frame = result.frame
    layers = list(dict.fromkeys(frame["layer"]))
    several = len(layers) > 1
    fig = new_figure(8.8, 6.6)
    ax = fig.add_subplot()
    rel = frame["relevance"].to_numpy(float)
    size = 25 + 600 * rel / max(rel.max(), 1e-12)
    handles = []
    for verdict, colour in COLOURS.items():
        n = int((frame["verdict"] == verdict).sum())
        if n:
            handles.append(Line2D([], [], marker="o", linestyle="", color=colour, alpha=0.7, label=f"{verdict} ({n})"))
        for k, layer in enumerate(layers):
            sel = ((frame["verdict"] == verdict) & (frame["layer"] == layer)).to_numpy()
            if sel.any():
                ax.scatter(frame["a_valid"][sel], frame["a_spur"][sel], s=size[sel], color=colour, alpha=0.7,
                           marker=MARKERS[k % len(MARKERS)], edgecolors="white", linewidths=0.6, zorder=3)
    if several:
        handles += [Line2D([], [], marker=MARKERS[k % len(MARKERS)], linestyle="", color="dimgrey", label=layer)
                    for k, layer in enumerate(layers)]
    ax.axhline(0, color="grey", linestyle="--", linewidth=0.8, zorder=1)
    ax.axvline(0, color="grey", linestyle="--", linewidth=0.8, zorder=1)
    x, y = frame["a_valid"].to_numpy(float), frame["a_spur"].to_numpy(float)
    pad = 0.12 * max(np.ptp(np.r_[x, 0.0]), np.ptp(np.r_[y, 0.0]), 0.02)
    ax.set_xlim(min(x.min(), 0) - pad, max(x.max(), 0) + pad)
    ax.set_ylim(min(y.min(), 0) - pad, max(y.max(), 0) + pad)
    for text, (tx, ty), ha, va in (("valid only", (0.98, 0.02), "right", "bottom"),
                                   ("spurious only", (0.02, 0.98), "left", "top"),
                                   ("both", (0.98, 0.98), "right", "top"),
                                   ("unexpected (neither)", (0.02, 0.02), "left", "bottom")):
        ax.text(tx, ty, text, transform=ax.transAxes, ha=ha, va=va, fontsize=8, color="grey", style="italic")
    ax.set_xlabel("a_valid = max over valid concepts of cos(θ, v) − cos(θ, null)")
    ax.set_ylabel("a_spur = max over spurious concepts of cos(θ, s) − cos(θ, null)")
    ax.set_title(textwrap.fill(
        f"audit of class {result.class_index} '{result.class_name}': {len(frame)} units of {', '.join(layers)} "
        f"with relevance ({result.stat} share over the class's samples) ≥ {result.min_relevance:g}; dot area ∝ "
        f"relevance · {result.backend}", 90), fontsize=9)
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    labels = []
    for row in frame.head(n_labels).itertuples():
        concept = "" if row.verdict == "unexpected" else \
            (row.valid_concept if row.a_valid >= row.a_spur else row.spurious_concept) + " "
        labels.append((row.a_valid, row.a_spur, f"#{row.unit} {concept}({row.relevance:.1%})"))
    _place_labels(fig, ax, labels)
    return fig


def plot_flagged(result, images: dict, n_exemplars: int = 5, n_relevant: int = 3) -> Any:
    """One row per spurious or unexpected unit given in ``images`` ((layer, unit) -> (concept example images, most
    relevant images), most relevant first): its verdict, alignments and other classes, its top concept examples
    and its most relevant samples for the class. None when no unit is flagged."""
    flagged = result.flagged.head(len(images))
    if flagged.empty:
        return None
    several = result.frame["layer"].nunique() > 1
    n_rel = n_relevant if any(len(rel) for _, rel in images.values()) else 0
    ncols = 1 + n_exemplars + n_rel
    height = 1.55 * len(flagged) + 0.8
    fig = new_figure(3.2 + 1.45 * (n_exemplars + n_rel), height)
    grid = fig.add_gridspec(len(flagged), ncols, width_ratios=[2.2] + [1.0] * (n_exemplars + n_rel))
    for r, row in enumerate(flagged.itertuples()):
        ax = fig.add_subplot(grid[r, 0])
        ax.axis("off")
        others = row.other_classes if isinstance(row.other_classes, str) and row.other_classes else \
            ("none" if isinstance(row.other_classes, str) else "unknown (unitlens relevance --predicted)")
        text = (f"{_unit_name(row.layer, row.unit, several)}: {row.verdict}\n"
                f"relevance {row.relevance:.1%}\n"
                f"a_valid {row.a_valid:+.3f} ({row.valid_concept})\n"
                f"a_spur {row.a_spur:+.3f} ({row.spurious_concept})\n"
                + textwrap.fill(f"also relevant for: {others}", 40))
        ax.text(0.0, 0.5, text, fontsize=8, va="center", ha="left", color=COLOURS[row.verdict],
                transform=ax.transAxes)
        concept, relevant = images[(row.layer, int(row.unit))]
        concept, relevant = concept[:n_exemplars], relevant[:n_rel]
        for c, img in enumerate(concept + [None] * (n_exemplars - len(concept)) + relevant):
            ax = fig.add_subplot(grid[r, 1 + c])
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.axis("off")
                continue
            ax.imshow(np.asarray(img))
            if r == 0 and c in (0, n_exemplars):
                ax.set_title("concept examples" if c == 0 else f"most relevant for {result.class_name}",
                             fontsize=7, loc="left")
            if c >= n_exemplars:
                for spine in ax.spines.values():
                    spine.set_color(COLOURS["both"])
    fig.suptitle(f"spurious and unexpected units for class {result.class_index} '{result.class_name}' "
                 f"({len(result.flagged)} flagged, {len(flagged)} shown) · {result.backend}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    return fig
