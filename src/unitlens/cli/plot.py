"""``unitlens plot …``: figures (PNG) of the results an atlas (or a study) holds.

Each command calls its step's ``plot_*`` function; the options of ``mis``, ``featviz`` and ``study`` are generated
from ``MISPlotOptions``, ``FeatvizPlotOptions`` and ``StudyPlotOptions`` (``cli.options``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unitlens.cli.common import failing_cleanly, group, say, split_list
from unitlens.cli.options import options_command
from unitlens.featviz.options import FeatvizPlotOptions
from unitlens.lens.defaults import CARD_EXEMPLARS, CARDS, PROJECTION
from unitlens.report.options import MISPlotOptions
from unitlens.study.figure_options import StudyPlotOptions

app = group("plot", help="Write figures (PNG).")


@app.command("mis")
@options_command
def mis(
    atlas: Path = typer.Argument(..., help="Atlas folder with MIS scores (unitlens mis ATLAS)."),
    out: Path = typer.Option(..., help="Folder to write the PNG files to."),
    *,
    options: MISPlotOptions,
) -> None:
    """Plot MIS: per-unit histogram, layers by depth (coloured by type), mean MIS vs relative depth and width."""
    from unitlens.atlas import Atlas
    from unitlens.mis.scoring import load_scores, summarize
    from unitlens.report.mis_plots import plot_mis

    with failing_cleanly():
        a = Atlas(atlas)
        frame = load_scores(a, options.backend)
        title = a.manifest.config.model
        paths = plot_mis(frame, summarize(frame, model=title)["layer"], out, title=title, options=options)
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
@options_command
def featviz(
    atlas: Path = typer.Argument(..., help="Atlas folder with feature visualisations (unitlens featviz ATLAS)."),
    out: Path = typer.Option(..., help="Folder to write the PNG files to."),
    *,
    options: FeatvizPlotOptions,
) -> None:
    """Feature visualisations: per layer, MIS with visualisations against MIS with natural exemplars (where both are
    scored), and a sheet of units with their visualisations beside their natural exemplars."""
    from unitlens.featviz.figures import plot_featviz

    with failing_cleanly():
        paths = plot_featviz(atlas, out, options)
    for p in paths:
        say(str(p))


@app.command("study")
@options_command
def study(
    folder: Path = typer.Argument(..., help="Study folder with MIS scores (unitlens study run)."),
    out: Optional[Path] = typer.Option(None, help="Folder for the PNG files (default: DIR/figures)."),
    *,
    options: StudyPlotOptions,
) -> None:
    """The MIS paper's study figures: ranking, distributions, MIS vs accuracy, by layer type, vs depth and width, worst
    units; for checkpoint studies MIS and accuracy per epoch and the per-layer change of an epoch."""
    from unitlens.study.figures import plot_study

    with failing_cleanly():
        paths = plot_study(folder, out, options)
    for p in paths:
        say(str(p))
