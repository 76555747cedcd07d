"""``plot_lens``: the θ map of a layer and unit cards, gathered from an embedded atlas and drawn by
``unitlens.report.lens_plots``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unitlens.atlas import Atlas
from unitlens.atlas.files import safe_name
from unitlens.atlas.labels import LabelStore
from unitlens.errors import BadInput, LensError
from unitlens.lens.analysis import backend_for, make_probe
from unitlens.lens.defaults import CARD_EXEMPLARS, CARDS, PROJECTION
from unitlens.lens.store import LensStore
from unitlens.report import lens_plots


def plot_lens(atlas, out, layer: str | None = None, backend: str | None = None, color: str = "label",
              text: str | None = None, images=None, projection: str = PROJECTION, n_cards: int = CARDS,
              units: list[int] | None = None, n_exemplars: int = CARD_EXEMPLARS) -> list[Path]:
    """Write ``lens_map_<layer>.png`` and ``card_<layer>_<unit>.png`` files into ``out``; returns their paths.

    Colour: ``label`` uses the stored SemanticLens labels of this backend (uniform if there are none); a ``text``
    or ``images`` probe colours by its alignment a instead. Cards: ``units``, else the units most aligned with the
    probe, else the best-aligned labelled units, else the first units.
    """
    if color not in ("label", "probe"):
        raise BadInput("color must be label or probe")
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
        probe = make_probe(store, backend_for(store), text, images)
    elif color == "probe":
        raise LensError("colouring by a probe needs --text or --image")
    paths = []
    map_path = out / f"lens_map_{safe_name(layer, hashed=False)}.png"
    model = store.atlas.manifest.config.model
    labels_by_unit, a_by_unit = {}, {}
    rows = LabelStore(store.atlas).read("semanticlens", store.backend, "", [layer])
    if len(rows):
        labels_by_unit = dict(zip(rows["unit"].astype(int), rows["label"]))
        a_by_unit = dict(zip(rows["unit"].astype(int), rows["score"]))
    if probe is not None:
        values = (data.vectors[keep] @ probe.query).numpy()
        title = f"{model} {layer}: θ of {len(keep)} units, alignment with {probe.kind} probe '{probe.name}'"
        paths.append(lens_plots.plot_theta_map(vectors, unit_ids, map_path, title, values=values,
                                    value_name="a = cos(θ,p) − cos(θ,null)" if probe.null is not None
                                    else "a = cos(θ,p)", projection=projection))
    else:
        labels = [labels_by_unit.get(int(u), "unlabelled") for u in unit_ids] if labels_by_unit else None
        title = f"{model} {layer}: θ of {len(keep)} units ({store.backend})" + \
            (", coloured by label" if labels else ", no labels yet (run unitlens lens label)")
        paths.append(lens_plots.plot_theta_map(vectors, unit_ids, map_path, title, labels=labels,
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
        imgs, vals = store.example_images(layer, u, n_exemplars, dataset)
        lab = labels_by_unit.get(u)
        extra = f" · label: {lab} (a={a_by_unit[u]:.3f})" if lab is not None else ""
        if probe is not None:
            extra += f" · a({probe.name})={float(data.vectors[u] @ probe.query):.3f}"
        crop = store.layer_meta(layer).get("crop", "none")
        title = f"{layer} #{u}{extra}\n{len(imgs)} top concept examples (crop: {crop}) · {store.backend}"
        card = out / f"card_{safe_name(layer, hashed=False)}_{u}.png"
        paths.append(lens_plots.plot_unit_card(imgs, vals, card, title))
    return paths
