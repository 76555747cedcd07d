"""SemanticLens figures: a 2-d map of a layer's θ vectors (UMAP or PCA) coloured by label or by a probe's
alignment, and unit cards (a unit's top concept examples with their activations and its label).

Both take arrays and images and return a matplotlib ``Figure``; ``unitlens.lens.figures.plot_lens`` gathers them
from an atlas.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from unitlens.errors import BadInput, Unavailable
from unitlens.report.figures import new_figure, save_figure


def project(vectors: np.ndarray, method: str = "umap", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, D) unit vectors -> (n, 2); UMAP with cosine metric, or PCA (also used when n is too small for UMAP)."""
    n = vectors.shape[0]
    if method not in ("umap", "pca"):
        raise BadInput("projection must be umap or pca")
    if method == "umap" and n >= 8:
        try:
            import warnings

            import umap
        except ImportError as err:
            raise Unavailable("the UMAP projection needs umap-learn: pip install umap-learn (or use pca)") from err
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reducer = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, metric="cosine", random_state=seed,
                                n_jobs=1)
            return reducer.fit_transform(vectors.astype(np.float32)), "UMAP"
    x = vectors - vectors.mean(0, keepdims=True)
    if n < 2:
        return np.zeros((n, 2)), "PCA"
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2] if vt.shape[0] >= 2 else np.vstack([vt, np.zeros_like(vt)])
    return x @ comps.T, "PCA"


def draw_theta_map(vectors: np.ndarray, units: np.ndarray, title: str, labels=None, values=None,
                   value_name: str = "a", projection: str = "umap") -> Any:
    """Scatter of projected θ; coloured by categorical ``labels`` or continuous ``values`` (one per unit)."""
    from matplotlib import colormaps

    xy, method = project(vectors, projection)
    fig = new_figure(8.5, 6.5)
    ax = fig.add_subplot(1, 1, 1)
    if values is not None:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap="coolwarm", s=22, edgecolors="none")
        fig.colorbar(sc, ax=ax, label=value_name)
        for k in np.argsort(-np.asarray(values))[:5]:  # name the five most aligned units
            ax.annotate(f"#{units[k]}", xy[k], fontsize=7, xytext=(3, 3), textcoords="offset points")
    elif labels is not None:
        labels = np.asarray(labels, dtype=object)
        names = [n for n in dict.fromkeys(labels.tolist()) if n != "none"]
        names.sort(key=lambda n: -int((labels == n).sum()))
        cmap = colormaps["tab20"]
        shown = names[:19]
        if "none" in set(labels.tolist()):
            mask = labels == "none"
            ax.scatter(xy[mask, 0], xy[mask, 1], c="lightgray", s=14, label=f"none ({int(mask.sum())})",
                       edgecolors="none")
        for i, name in enumerate(shown):
            mask = labels == name
            ax.scatter(xy[mask, 0], xy[mask, 1], color=cmap(i % 20), s=22, label=f"{name} ({int(mask.sum())})",
                       edgecolors="none")
        rest = [n for n in names if n not in shown]
        if rest:
            mask = np.isin(labels, rest)
            ax.scatter(xy[mask, 0], xy[mask, 1], c="black", s=14, label=f"{len(rest)} more concepts",
                       edgecolors="none")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], c="tab:blue", s=22, edgecolors="none")
    ax.set_title(textwrap.fill(title, 95), fontsize=9)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def draw_unit_card(images: list, values: list[float], title: str, ncols: int = 4) -> Any:
    """A grid of a unit's concept examples (PIL images, already cropped) titled with their activations."""
    n = max(len(images), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = new_figure(2.1 * ncols, 2.45 * nrows + 0.6)
    for k, (img, val) in enumerate(zip(images, values)):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.imshow(np.asarray(img))
        ax.set_title(f"act {val:.3g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_unit_card(images: list, values: list[float], out: Path, title: str, ncols: int = 4) -> Path:
    """``draw_unit_card`` saved as PNG to ``out``."""
    return save_figure(draw_unit_card(images, values, title, ncols), out, tight=False)
