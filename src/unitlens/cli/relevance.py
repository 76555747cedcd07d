"""``unitlens relevance`` and ``unitlens graph``: CRP relevance of units for a class, and attribution graphs.

::

    unitlens relevance ATLAS --class 'analog clock' [--layers a,b] [--data DIR] [--samples top5|top1|all]
    unitlens relevance ATLAS --predicted            (every sample explains its own top-1 class)
    unitlens graph ATLAS --class 'analog clock' --layers lower,upper [--backend ...] [--out FILE]
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.cli.common import (
    FORMAT,
    fail,
    failing_cleanly,
    machine_readable,
    print_frame,
    resumable,
    say,
    split_list,
    tables,
)
from unitlens.cli.options import runs_model
from unitlens.relevance.defaults import (
    BATCH_SIZE,
    GRAPH_MIN_RELEVANCE,
    SAMPLE_RULE,
    TOP_N,
)


@runs_model
def relevance(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    cls: Optional[str] = typer.Option(None, "--class", help="Output class to explain: index or name ('analog clock')."),
    predicted: bool = typer.Option(False, "--predicted", help="Explain every sample's own top-1 class instead; keeps "
                                                              "each unit's top classes."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs (default: all recorded)."),
    data: Optional[str] = typer.Option(None, help="Other images to explain on (folder or .txt/.csv list; default: "
                                                  "the atlas's samples)."),
    samples: str = typer.Option(SAMPLE_RULE, help="Which samples explain --class: top5 (class among the top-5 "
                                              "predictions), top1, or all."),
    batch_size: int = typer.Option(BATCH_SIZE, help="Images per CRP pass."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
    top_n: int = typer.Option(TOP_N, help="Samples kept per unit (highest relevance share)."),
    show: int = typer.Option(10, help="Most relevant units listed per layer (last layers shown)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("units", "relevance"),
) -> None:
    """Relevance (CRP, ε z⁺ ♭) of every unit for a class: mean and max share over samples, stored in the atlas."""
    import pandas as pd

    from unitlens.relevance import compute_predicted_relevance, compute_relevance
    from unitlens.relevance.store import folder, load_meta

    if (cls is None) == (not predicted):
        fail("give --class <index|name> or --predicted (one of them)")
    with failing_cleanly(), resumable():
        if predicted:
            frame = compute_predicted_relevance(atlas, layers=split_list(layers), data=data,
                                                batch_size=batch_size, device=device, progress=True)
            meta = load_meta(atlas, "predicted")
        else:
            frame = compute_relevance(atlas, cls, layers=split_list(layers), data=data, samples=samples,
                                      batch_size=batch_size, device=device, progress=True, top_n=top_n)
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
        top = frame[frame["layer"] == name].sort_values("rel_mean", ascending=False).head(show)
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


@runs_model
def graph(
    atlas: Path = typer.Argument(..., help="Atlas folder with class relevance and lens labels."),
    cls: str = typer.Option(..., "--class", help="Class (index or name) with stored relevance."),
    layers: str = typer.Option(..., help="Two layers, lower,upper (e.g. blocks.5.3.conv_pwl,blocks.6.0.conv_pwl)."),
    backend: Optional[str] = typer.Option(None, help="Lens backend whose labels group the units (when several)."),
    out: Optional[Path] = typer.Option(None, help="JSON file to write (PNG next to it; default: "
                                                   "relevance/graph_<class>_<lower>__<upper>.json)."),
    min_relevance: float = typer.Option(GRAPH_MIN_RELEVANCE,
                                        help="Units whose highest relevance share is below this are left out."),
    batch_size: int = typer.Option(BATCH_SIZE, help="(sample, group) pairs per CRP pass."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("groups", "edges"),
) -> None:
    """Attribution graph between the labelled unit groups of two layers for a class (JSON + PNG)."""
    from unitlens.relevance.graph import attribution_graph

    with failing_cleanly():
        res = attribution_graph(atlas, cls, layers, backend=backend, min_relevance=min_relevance,
                                batch_size=batch_size, device=device, progress=True, out=out)
    nodes = res.nodes.assign(units=[len(u) for u in res.nodes["units"]])
    print_frame(nodes.drop(columns=["id"]), title=f"groups (relevance = sum of mean shares for class "
                                                    f"{res.meta['class_name']})", name="groups",
                full=res.nodes)
    edges = res.edges.sort_values("weight", ascending=False)
    print_frame(edges.head(15), title="strongest edges (upper group -> lower group, share of the lower layer's "
                                      "relevance)", name="edges", full=edges)
    say(f"wrote {res.json_path} and {res.png_path} ({res.meta['n_samples']} samples, "
                       f"{res.meta['seconds']:.1f} s)")
