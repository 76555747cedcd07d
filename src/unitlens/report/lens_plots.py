"""SemanticLens figures: a 2-d map of a layer's θ vectors (UMAP or PCA) coloured by label or by a probe's
alignment, and unit cards (a unit's top concept examples with their activations and its label).

Drawn with matplotlib's object API on Agg canvases (no pyplot, no global backend switch).
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import torch


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def project(vectors: np.ndarray, method: str = "umap", seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, D) unit vectors -> (n, 2); UMAP with cosine metric, or PCA (also used when n is too small for UMAP)."""
    n = vectors.shape[0]
    if method not in ("umap", "pca"):
        raise ValueError("projection must be umap or pca")
    if method == "umap" and n >= 8:
        try:
            import warnings

            import umap
        except ImportError as err:
            raise ImportError("the UMAP projection needs umap-learn: pip install umap-learn (or use pca)") from err
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


def plot_theta_map(vectors: np.ndarray, units: np.ndarray, out: Path, title: str, labels=None, values=None,
                   value_name: str = "a", projection: str = "umap") -> Path:
    """Scatter of projected θ; coloured by categorical ``labels`` or continuous ``values`` (one per unit)."""
    from matplotlib import colormaps

    xy, method = project(vectors, projection)
    fig = _figure(8.5, 6.5)
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
    fig.savefig(out)
    return out


def plot_unit_card(images: list, values: list[float], out: Path, title: str, ncols: int = 4) -> Path:
    """A grid of a unit's concept examples (PIL images, already cropped) titled with their activations."""
    n = max(len(images), 1)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig = _figure(2.1 * ncols, 2.45 * nrows + 0.6)
    for k, (img, val) in enumerate(zip(images, values)):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.imshow(np.asarray(img))
        ax.set_title(f"act {val:.3g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    return out


def plot_lens(atlas, out, layer: str | None = None, backend: str | None = None, color: str = "label",
              text: str | None = None, images=None, projection: str = "umap", n_cards: int = 8,
              units: list[int] | None = None, n_exemplars: int = 8) -> list[Path]:
    """Write ``lens_map_<layer>.png`` and ``card_<layer>_<unit>.png`` files into ``out``; returns their paths.

    Colour: ``label`` uses the stored result of ``label`` (uniform if there is none); a ``text`` or ``images``
    probe colours by its alignment a instead. Cards: ``units``, else the units most aligned with the probe, else
    the best-aligned labelled units, else the first units.
    """
    from unitlens.lens.analysis import _backend_for, make_probe, stored_labels
    from unitlens.atlas import Atlas
    from unitlens.lens.examples import LensError
    from unitlens.lens.store import LensStore

    if color not in ("label", "probe"):
        raise ValueError("color must be label or probe")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = LensStore.open(Atlas.open(atlas), backend)
    layer = layer or store.layers[-1]
    data = store.read_layer(store.resolve([layer])[0])
    keep = torch.nonzero(~data.constant).flatten()
    if len(keep) == 0:
        raise LensError(f"layer {layer} has only constant units; nothing to plot")
    vectors = data.vectors[keep].numpy()
    unit_ids = keep.numpy()
    probe = None
    if text is not None or images:
        probe = make_probe(store, _backend_for(store), text, images)
    elif color == "probe":
        raise LensError("colouring by a probe needs --text or --image")
    paths = []
    model = str(store.atlas.manifest.get("config", {}).get("model", ""))
    labels_by_unit, a_by_unit = {}, {}
    table = stored_labels(store)
    if table is not None:
        rows = table[table["layer"] == layer]
        labels_by_unit = dict(zip(rows["unit"].astype(int), rows["label"]))
        a_by_unit = dict(zip(rows["unit"].astype(int), rows["a"]))
    if probe is not None:
        values = (data.vectors[keep] @ probe.query).numpy()
        title = f"{model} {layer}: θ of {len(keep)} units, alignment with {probe.kind} probe '{probe.name}'"
        paths.append(plot_theta_map(vectors, unit_ids, out / f"lens_map_{_safe(layer)}.png", title, values=values,
                                    value_name="a = cos(θ,p) − cos(θ,null)" if probe.null is not None
                                    else "a = cos(θ,p)", projection=projection))
    else:
        labels = [labels_by_unit.get(int(u), "unlabelled") for u in unit_ids] if labels_by_unit else None
        title = f"{model} {layer}: θ of {len(keep)} units ({store.backend})" + \
            (", coloured by label" if labels else ", no labels yet (run unitlens lens label)")
        paths.append(plot_theta_map(vectors, unit_ids, out / f"lens_map_{_safe(layer)}.png", title, labels=labels,
                                    projection=projection))
    if units is None:
        if probe is not None:
            order = np.argsort(-values)
            units = [int(unit_ids[k]) for k in order[:n_cards]]
        elif a_by_unit:
            ranked = sorted(((a, u) for u, a in a_by_unit.items() if labels_by_unit.get(u) != "none"),
                            key=lambda t: (-t[0], t[1]))
            units = [u for _, u in ranked[:n_cards]] or [int(u) for u in unit_ids[:n_cards]]
        else:
            units = [int(u) for u in unit_ids[:n_cards]]
    dataset = store.atlas.dataset()
    for u in units:
        if not 0 <= u < data.theta.shape[0]:
            raise LensError(f"unit {u} is not in layer {layer} ({data.theta.shape[0]} units)")
        sel = torch.nonzero(data.mask[u]).flatten()[:n_exemplars]
        imgs, vals = [], []
        for j in sel.tolist():
            img = dataset.image(int(data.ids[u, j]))
            if bool(data.has_box[u, j]):
                img = img.crop(tuple(int(v) for v in data.boxes[u, j].tolist()))
            imgs.append(img)
            vals.append(float(data.vals[u, j]))
        lab = labels_by_unit.get(u)
        extra = f" · label: {lab} (a={a_by_unit[u]:.3f})" if lab is not None else ""
        if probe is not None:
            extra += f" · a({probe.name})={float(data.vectors[u] @ probe.query):.3f}"
        crop = store.layer_meta(layer).get("crop", "none")
        title = f"{layer} #{u}{extra}\n{len(imgs)} top concept examples (crop: {crop}) · {store.backend}"
        paths.append(plot_unit_card(imgs, vals, out / f"card_{_safe(layer)}_{u}.png", title))
    return paths
