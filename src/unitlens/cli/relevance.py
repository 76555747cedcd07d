"""``unitlens relevance`` and ``unitlens graph``: CRP relevance of units for a class, and attribution graphs.

::

    unitlens relevance ATLAS --class 'analog clock' [--layers a,b] [--data DIR] [--samples top5|top1|all]
    unitlens relevance ATLAS --predicted            (every sample explains its own top-1 class)
    unitlens graph ATLAS --class 'analog clock' --layers lower,upper [--backend ...] [--out FILE]

Their options are generated from ``RelevanceOptions``, ``PredictedOptions`` and ``GraphOptions``
(``cli.options``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.cli.common import (
    FORMAT,
    fail,
    failing_cleanly,
    inputs,
    machine_readable,
    print_frame,
    resumable,
    say,
    tables,
)
from unitlens.cli.options import options_command
from unitlens.options import flag_of
from unitlens.relevance.options import CrpPassOptions, GraphOptions, PredictedOptions, RelevanceOptions

SHOWN = 10  # most relevant units listed per layer in a table (--format csv / json: every unit)


def _predicted_options(options: RelevanceOptions, predicted: PredictedOptions) -> PredictedOptions:
    """The options of a ``--predicted`` run: the shared ones and ``--top-classes``; ``--samples`` and ``--top-n``,
    which only a ``--class`` run takes, are refused."""
    shared = {s.name for s in CrpPassOptions.specs()}
    only_class = [s for s in RelevanceOptions.specs() if s.name in options.changed() and s.name not in shared]
    if only_class:
        fail(f"{', '.join(flag_of(s) for s in only_class)} applies to --class, not to --predicted")
    return predicted.replace(**{name: getattr(options, name) for name in shared})


@inputs("cls", "predicted", "data")
@options_command(only={"per_predicted": ("top_classes",)})
def relevance(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    cls: Optional[str] = typer.Option(None, "--class", help="Output class to explain: index or name ('analog clock')."),
    predicted: bool = typer.Option(False, "--predicted", help="Explain every sample's own top-1 class instead; keeps "
                                                              "each unit's top classes."),
    data: Optional[str] = typer.Option(None, help="Other images to explain on (folder or .txt/.csv list; default: "
                                                  "the atlas's samples)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("units", "relevance"),
    *,
    options: RelevanceOptions,
    per_predicted: PredictedOptions,
) -> None:
    """Relevance (CRP, ε z⁺ ♭) of every unit for a class: mean and max share over samples, stored in the atlas."""
    import pandas as pd

    from unitlens.relevance import class_relevance, predicted_relevance
    from unitlens.relevance.store import folder, load_meta

    if (cls is None) == (not predicted):
        fail("give --class <index|name> or --predicted (one of them)")
    if predicted:
        per_predicted = _predicted_options(options, per_predicted)
    elif per_predicted.changed():
        fail(f"{flag_of(PredictedOptions.spec('top_classes'))} applies to --predicted, not to --class")
    with failing_cleanly(), resumable():
        if predicted:
            frame = predicted_relevance(atlas, per_predicted, data=data)
            meta = load_meta(atlas, "predicted")
        else:
            frame = class_relevance(atlas, cls, options, data=data)
            meta = load_meta(atlas, f"class_{int(frame['class_index'].iloc[0])}")
    names = list(dict.fromkeys(frame["layer"]))
    if predicted:
        frame = frame[frame["rank"] == 0]
        what = "units by share for their top class"
    else:
        what = f"most relevant units for class {frame['class_index'].iloc[0]} ({frame['class_name'].iloc[0]})"
    if machine_readable():  # every unit of every layer, one table
        ranked = [g.sort_values("rel_mean", ascending=False) for _, g in frame.groupby("layer", sort=False)]
        print_frame(pd.concat(ranked, ignore_index=True), title=what, name="units")
    for name in [] if machine_readable() else names[-2:]:  # the top units of the last layers
        top = frame[frame["layer"] == name].sort_values("rel_mean", ascending=False).head(SHOWN)
        if predicted:
            top = top[["unit", "class_index", "class_name", "rel_mean", "n_samples"]]
        else:
            top = top[["unit", "rel_mean", "rel_max", "rel_raw_mean"]].assign(
                top_samples=[" ".join(map(str, t[:3])) for t in top["top_ids"]])
        print_frame(top, title=f"{name}: {what}", name="units")
    cons = meta.get("conservation", {})
    print_frame(pd.DataFrame([{"layers": len(names), "units": frame.groupby(["layer", "unit"]).ngroups,
                                    "samples": meta.get("n_samples"),
                                    "rule": meta.get("samples"),
                                    "Σ R / logit (last layer)": cons.get(names[-1], float("nan")),
                                    "time (s)": meta.get("seconds", float("nan"))}]), title="relevance",
                name="relevance")
    say(f"wrote {folder(atlas)}")


@inputs("cls", "layers", "backend", "out")
@options_command
def graph(
    atlas: Path = typer.Argument(..., help="Atlas folder with class relevance and lens labels."),
    cls: str = typer.Option(..., "--class", help="Class (index or name) with stored relevance."),
    layers: str = typer.Option(..., help="Two layers, lower,upper (e.g. blocks.5.3.conv_pwl,blocks.6.0.conv_pwl)."),
    backend: Optional[str] = typer.Option(None, help="Lens backend whose labels group the units (when several)."),
    out: Optional[Path] = typer.Option(None, help="JSON file to write (the figure as PNG next to it; default: "
                                                   "relevance/graph_<class>_<lower>__<upper>.json)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("groups", "edges"),
    *,
    options: GraphOptions,
) -> None:
    """Attribution graph between the labelled unit groups of two layers for a class (JSON + PNG)."""
    from unitlens.relevance import attribution_graph, plot_attribution_graph

    with failing_cleanly():
        res = attribution_graph(atlas, cls, layers, options, backend=backend, out=out)
        png = res.json_path.with_suffix(".png")
        plot_attribution_graph(res, png)
    nodes = res.nodes.assign(units=[len(u) for u in res.nodes["units"]])
    print_frame(nodes.drop(columns=["id"]), title=f"groups (relevance = sum of mean shares for class "
                                                    f"{res.meta['class_name']})", name="groups",
                full=res.nodes)
    edges = res.edges.sort_values("weight", ascending=False)
    print_frame(edges.head(15), title="strongest edges (upper group -> lower group, share of the lower layer's "
                                      "relevance)", name="edges", full=edges)
    say(f"wrote {res.json_path} and {png} ({res.meta['n_samples']} samples, {res.meta['seconds']:.1f} s)")
