"""``plot_featviz(atlas, out)``: the figures of an atlas's feature visualisations — per layer, MIS with
visualisations against MIS with natural exemplars (where both are scored), and a sheet of units showing their
visualisations beside their natural exemplars."""
from __future__ import annotations

from pathlib import Path

from unitlens.atlas import Atlas
from unitlens.atlas.layout import layer_stem
from unitlens.errors import NotComputed
from unitlens.featviz.compare import compare_explanations
from unitlens.featviz.options import FeatvizPlotOptions
from unitlens.featviz.selection import parse_units
from unitlens.featviz.store import FeatvizStore
from unitlens.options import takes_options
from unitlens.report.featviz_plots import plot_explanation_comparison, plot_unit_sheet


@takes_options(FeatvizPlotOptions)
def plot_featviz(atlas: Atlas | str | Path, out: str | Path, options: FeatvizPlotOptions | None = None) -> list[Path]:
    """Write the figures of an atlas's feature visualisations into ``out``.

    ``mis_featviz_<layer>.png`` (and ``mis_featviz_by_layer.png``) when the atlas has MIS scores of both kinds of
    explanation, and ``featviz_units_<layer>.png``: the chosen units (default: the ``n_units`` where
    visualisations help most and least, or the first ones before MIS) with ``k`` images of each kind and
    direction.

    Parameters
    ----------
    atlas
        An atlas with feature visualisations (``featviz_atlas``), or its folder.
    out
        The folder to write the PNG files to.
    options
        Which scores, layers and units (``FeatvizPlotOptions``; keyword arguments override its fields).

    Returns
    -------
    list of Path
        The files written.
    """
    assert options is not None  # takes_options fills it
    backend, layers, n_units, k = options.backend, options.layers, options.n_units, options.k
    units = parse_units(options.units)
    atlas = Atlas.open(atlas)
    store = FeatvizStore(atlas)
    names = [i.name for i in atlas.select_layers(layers)] if layers is not None else store.layers()
    names = [n for n in names if n in store.layers()]
    if not names:
        raise NotComputed(f"atlas {atlas.path} has no feature visualisations of these layers; run unitlens featviz "
                          f"{atlas.path} --layers NAMES first")
    out = Path(out)
    title = atlas.manifest.config.model
    paths: list[Path] = []
    comparison = None
    try:
        comparison = compare_explanations(atlas, backend, names)
    except NotComputed:
        pass
    if comparison is not None:
        paths += plot_explanation_comparison(comparison.units, comparison.layers, out,
                                             f"{title} · backend {comparison.backend}")
    dataset = atlas.dataset()
    for layer in names:
        table = store.table(layer)
        size = int(store.meta(layer)["options"]["size"])
        chosen = units
        scores = None
        if comparison is not None:
            scores = comparison.units[comparison.units["layer"] == layer].set_index("unit")
        if chosen is None:
            if scores is not None and len(scores):
                order = scores.sort_values("difference").index.tolist()
                half = max(1, n_units // 2)
                chosen = list(dict.fromkeys(order[-half:][::-1] + order[:n_units - half]))
            else:
                chosen = sorted(table["unit"].unique().tolist())[:n_units]
        ex = atlas.exemplars(layer)
        blocks = []
        for u in chosen:
            caption = f"unit {u}"
            if scores is not None and u in scores.index:
                caption += (f"\nMIS exemplars {scores.loc[u, 'mis']:.2f}"
                            f"\nMIS visualisations {scores.loc[u, 'mis_featviz']:.2f}")
            blocks.append({"caption": caption,
                           "featviz_top": store.unit_images(layer, u, "top", k),
                           "natural_top": [dataset.image(int(i)).convert("RGB").resize((size, size))
                                           for i in ex.top_ids[u, :k].tolist()],
                           "featviz_bottom": store.unit_images(layer, u, "bottom", k),
                           "natural_bottom": [dataset.image(int(i)).convert("RGB").resize((size, size))
                                              for i in ex.bottom_ids[u, :k].tolist()]})
        paths.append(plot_unit_sheet(blocks, out / f"featviz_units_{layer_stem(layer)}.png", f"{layer} · {title}"))
    return paths
