"""``unitlens plot …``: figures (PNG) of the results an atlas (or a study) holds.

Each command calls its step's ``plot_*`` function; the options of ``mis``, ``featviz`` and ``study`` are generated
from ``MISPlotOptions``, ``FeatvizPlotOptions`` and ``StudyPlotOptions`` (``cli.options``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unitlens.cli.common import failing_cleanly, group, inputs, say
from unitlens.cli.options import options_command
from unitlens.featviz.options import FeatvizPlotOptions
from unitlens.lens.options import LensPlotOptions
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
@inputs("out", "text", "image")
@options_command
def lens(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    out: Path = typer.Option(..., help="Folder to write the PNG files to."),
    text: Optional[str] = typer.Option(None, help="Text probe to colour by."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="Probe image/folder to colour by (repeatable)."),
    *,
    options: LensPlotOptions,
) -> None:
    """Map of θ for a layer (UMAP/PCA, coloured by label or probe alignment) and unit cards, as PNGs."""
    from unitlens.lens.figures import plot_lens

    with failing_cleanly():
        figures = plot_lens(atlas, options, text=text, images=image or None, out=out)
    for p in figures.paths:
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
