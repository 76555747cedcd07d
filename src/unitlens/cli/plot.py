"""``unitlens plot …``: figures (PNG) of the results an atlas (or a study) holds."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unitlens.cli.common import failing_cleanly, group, say, split_list
from unitlens.lens.defaults import CARD_EXEMPLARS, CARDS, PROJECTION

app = group("plot", help="Write figures (PNG).")


@app.command("mis")
def mis(
    atlas: Path = typer.Argument(..., help="Atlas folder with MIS scores (unitlens mis ATLAS)."),
    out: Path = typer.Option(..., help="Folder to write the PNG files to."),
    backend: Optional[str] = typer.Option(None, help="Which backend's scores (needed when there are several)."),
) -> None:
    """Plot MIS: per-unit histogram, layers by depth (coloured by type), mean MIS vs relative depth and width."""
    from unitlens.atlas import Atlas
    from unitlens.mis.scoring import load_scores, summarize
    from unitlens.report.mis_plots import plot_mis

    with failing_cleanly():
        a = Atlas(atlas)
        frame = load_scores(a, backend)
        title = a.manifest.config.model
        paths = plot_mis(frame, summarize(frame, model=title)["layer"], out, title=title)
    for p in paths:
        say(str(p))


@app.command("lens")
def lens(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    out: Path = typer.Option(..., help="Folder to write the PNG files to."),
    layer: Optional[str] = typer.Option(None, help="Layer to map (default: the last embedded layer)."),
    backend: Optional[str] = typer.Option(None, help="Which embedding (needed when the atlas has several)."),
    color: str = typer.Option("label", help="label (from unitlens lens label) or probe (needs --text/--image)."),
    text: Optional[str] = typer.Option(None, help="Text probe to colour by."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="Probe image/folder to colour by (repeatable)."),
    projection: str = typer.Option(PROJECTION, help="umap or pca."),
    cards: int = typer.Option(CARDS, help="Unit cards to draw: the units best aligned with the probe, else the "
                                      "best-aligned labelled units, else the first units."),
    units: Optional[str] = typer.Option(None, help="Comma-separated unit indices for cards (overrides --cards)."),
    exemplars: int = typer.Option(CARD_EXEMPLARS, help="Exemplars per unit card."),
) -> None:
    """Map of θ for a layer (UMAP/PCA, coloured by label or probe alignment) and unit cards, as PNGs."""
    from unitlens.lens.figures import plot_lens

    with failing_cleanly():
        chosen = [int(u) for u in split_list(units) or []] if units else None
        paths = plot_lens(atlas, out, layer=layer, backend=backend, color=color, text=text, images=image or None,
                          projection=projection, n_cards=cards, units=chosen, n_exemplars=exemplars)
    for p in paths:
        say(str(p))


@app.command("featviz")
def featviz(
    atlas: Path = typer.Argument(..., help="Atlas folder with feature visualisations (unitlens featviz ATLAS)."),
    out: Path = typer.Option(..., help="Folder to write the PNG files to."),
    backend: Optional[str] = typer.Option(None, help="Which backend's MIS scores (needed when there are several)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs (default: every layer "
                                                    "with visualisations)."),
    units: Optional[str] = typer.Option(None, help="Comma-separated units for the sheets (default: where "
                                                   "visualisations help most and least)."),
    n_units: int = typer.Option(4, help="Units per sheet when --units is not given."),
    k: int = typer.Option(5, help="Images of each kind and direction per unit on the sheets."),
) -> None:
    """Feature visualisations: per layer, MIS with visualisations against MIS with natural exemplars (where both are
    scored), and a sheet of units with their visualisations beside their natural exemplars."""
    from unitlens.featviz.figures import plot_featviz

    with failing_cleanly():
        chosen = [int(u) for u in split_list(units) or []] if units else None
        paths = plot_featviz(atlas, out, backend=backend, layers=split_list(layers), units=chosen, n_units=n_units,
                             k=k)
    for p in paths:
        say(str(p))


@app.command("study")
def study(
    folder: Path = typer.Argument(..., help="Study folder with MIS scores (unitlens study run)."),
    out: Optional[Path] = typer.Option(None, help="Folder for the PNG files (default: DIR/figures)."),
    epoch: Optional[int] = typer.Option(None, help="Checkpoint studies: the epoch whose per-layer MIS change is "
                                                   "drawn (default: the first after initialisation)."),
) -> None:
    """Paper 000's study figures: ranking, distributions, MIS vs accuracy, by layer type, vs depth and width, worst
    units; for checkpoint studies MIS and accuracy per epoch and the per-layer change of an epoch."""
    from unitlens.study.figures import plot_study

    with failing_cleanly():
        paths = plot_study(folder, out, epoch=epoch)
    for p in paths:
        say(str(p))
