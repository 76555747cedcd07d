"""``plot_lens``: the θ map of a layer and unit cards, gathered from an embedded atlas and drawn by
``unitlens.report.lens_plots``; ``plot_unit``: one unit's card (its top concept examples, cropped as embedded)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unitlens.atlas import Atlas
from unitlens.atlas.files import safe_name
from unitlens.atlas.labels import LabelStore
from unitlens.backends import Backend
from unitlens.errors import LensError
from unitlens.lens.analysis import _store, backend_for, make_probe
from unitlens.lens.defaults import CARD_EXEMPLARS
from unitlens.lens.options import LensPlotOptions
from unitlens.lens.store import LensStore
from unitlens.options import takes_options
from unitlens.report import lens_plots
from unitlens.report.figures import save_figure


@dataclass
class LensFigures:
    """The θ map of a layer and the unit cards drawn beside it (matplotlib Figures), and the files written."""

    layer: str
    map: Any
    cards: dict[int, Any] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)


def _stored_labels(store: LensStore, layer: str) -> tuple[dict[int, str], dict[int, float]]:
    """The stored SemanticLens labels of ``layer`` in this backend's space: label and alignment a by unit."""
    rows = LabelStore(store.atlas).read("semanticlens", store.backend, "", [layer])
    if not len(rows):
        return {}, {}
    return dict(zip(rows["unit"].astype(int), rows["label"])), dict(zip(rows["unit"].astype(int), rows["score"]))


def plot_unit(store: LensStore, layer: str, unit: int, exemplars: int = CARD_EXEMPLARS, note: str = "",
              path: str | Path | None = None, dataset: Any = None) -> Any:
    """A unit's card: its top concept examples, cropped as the lens embedded them, with their activations.

    Parameters
    ----------
    store
        The lens store of an embedded atlas (``LensStore.open(atlas)``, ``Lens.store``).
    layer, unit
        The unit.
    exemplars
        Concept examples shown.
    note
        Added to the title (a label, an alignment).
    path
        Where to save the figure as PNG (nothing is saved when None).
    dataset
        The atlas's dataset (opened when not given; pass it when drawing many cards).

    Returns
    -------
    matplotlib.figure.Figure
        The card.
    """
    data = store.read_layer(layer)
    if not 0 <= unit < data.theta.shape[0]:
        raise LensError(f"unit {unit} is not in layer {layer} ({data.theta.shape[0]} units)")
    imgs, vals = store.example_images(layer, unit, exemplars, dataset)
    crop = store.layer_meta(layer).get("crop", "none")
    title = f"{layer} #{unit}{note}\n{len(imgs)} top concept examples (crop: {crop}) · {store.backend}"
    fig = lens_plots.draw_unit_card(imgs, vals, title)
    if path is not None:
        save_figure(fig, path, tight=False)
    return fig


@takes_options(LensPlotOptions)
def plot_lens(atlas: Atlas | LensStore | str | Path, options: LensPlotOptions | None = None, *,
              backend: Backend | str | None = None, text: str | None = None, images: Any = None,
              out: str | Path | None = None) -> LensFigures:
    """The θ map of a layer (UMAP or PCA) and cards of some of its units.

    The map is coloured by the stored SemanticLens labels (uniform when there are none), or, when a ``text`` or
    ``images`` probe is given, by each unit's alignment with it. Cards: ``units``, else the units most aligned
    with the probe, else the best-aligned labelled units, else the first units.

    Parameters
    ----------
    atlas
        An embedded atlas (a path, an ``Atlas``, or its ``LensStore``).
    options
        A ``LensPlotOptions``; any of its fields may also be given as a keyword argument (see below).
    backend
        Which embedding, as a name or a ``Backend`` instance (used to embed the probe); overrides
        ``options.backend``.
    text
        A text probe to colour by (needs a backend with a text encoder).
    images
        Probe images or folders to colour by.
    out
        A folder to save ``lens_map_<layer>.png`` and ``card_<layer>_<unit>.png`` into (nothing is saved when
        None).

    Returns
    -------
    LensFigures
        ``.map`` and ``.cards`` (unit -> Figure), and ``.paths`` of the files written.

    Examples
    --------
    >>> plot_lens("atlas/lite0-demo", text="a star", projection="pca", cards=4).map  # doctest: +SKIP
    """
    options = options or LensPlotOptions()
    backend = options.backend if backend is None else backend
    store = _store(atlas, backend)
    layer = store.resolve([options.layer])[0] if options.layer else store.layers[-1]
    data = store.read_layer(layer)
    keep = torch.nonzero(~data.constant).flatten()
    if len(keep) == 0:
        raise LensError(f"layer {layer} has only constant units; nothing to plot")
    chosen = [int(u) for u in options.units] if options.units is not None else None
    for u in chosen or []:
        if not 0 <= u < data.theta.shape[0]:
            raise LensError(f"unit {u} is not in layer {layer} ({data.theta.shape[0]} units)")
    probe = None
    if text is not None or images:
        probe = make_probe(store, backend_for(store, backend), text, images)
    elif options.color == "probe":
        raise LensError("colouring by a probe needs a text probe or probe images (--text or --image)")
    vectors, unit_ids = data.vectors[keep].numpy(), keep.numpy()
    model = store.atlas.manifest.config.model
    labels_by_unit, a_by_unit = _stored_labels(store, layer)
    values = None
    if probe is not None:
        values = (data.vectors[keep] @ probe.query).numpy()
        title = f"{model} {layer}: θ of {len(keep)} units, alignment with {probe.kind} probe '{probe.name}'"
        theta_map = lens_plots.draw_theta_map(vectors, unit_ids, title, values=values,
                                              value_name="a = cos(θ,p) − cos(θ,null)" if probe.null is not None
                                              else "a = cos(θ,p)", projection=options.projection)
    else:
        labels = [labels_by_unit.get(int(u), "unlabelled") for u in unit_ids] if labels_by_unit else None
        title = f"{model} {layer}: θ of {len(keep)} units ({store.backend})" + \
            (", coloured by label" if labels else ", no labels yet (run unitlens lens label)")
        theta_map = lens_plots.draw_theta_map(vectors, unit_ids, title, labels=labels,
                                              projection=options.projection)
    if chosen is None:
        if values is not None:
            chosen = [int(unit_ids[k]) for k in np.argsort(-values)[:options.cards]]
        else:
            ranked = sorted(((a, u) for u, a in a_by_unit.items() if labels_by_unit.get(u) != "none"),
                            key=lambda t: (-t[0], t[1]))
            chosen = [u for _, u in ranked[:options.cards]] or [int(u) for u in unit_ids[:options.cards]]
    dataset = store.atlas.dataset()
    figures = LensFigures(layer, theta_map)
    for u in chosen:
        lab = labels_by_unit.get(u)
        note = f" · label: {lab} (a={a_by_unit[u]:.3f})" if lab is not None else ""
        if probe is not None:
            note += f" · a({probe.name})={float(data.vectors[u] @ probe.query):.3f}"
        figures.cards[u] = plot_unit(store, layer, u, options.exemplars, note, dataset=dataset)
    if out is not None:
        out = Path(out)
        stem = safe_name(layer, hashed=False)
        figures.paths.append(save_figure(theta_map, out / f"lens_map_{stem}.png", tight=False))
        figures.paths += [save_figure(fig, out / f"card_{stem}_{u}.png", tight=False)
                          for u, fig in figures.cards.items()]
    return figures
