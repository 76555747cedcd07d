"""``unitlens basis …``: ``fit`` a basis of a layer, ``record`` its features as a derived layer, ``compare`` them
with the layer's channels, ``list`` the bases of an atlas."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.basis.options import BasisCompareOptions, BasisOptions, BasisRecordOptions
from unitlens.cli.common import (
    FORMAT,
    failing_cleanly,
    group,
    machine_readable,
    note,
    print_frame,
    resumable,
    say,
)
from unitlens.cli.options import options_command

app = group("basis", help="Units beyond channels: SAE features, PCA/ICA/NMF components, random or your own "
                          "directions, recorded and measured like channels.")

_FIT_SHOWN = ("n_samples", "features", "r2", "explained_variance", "dead_features", "mean_active")


@app.command("fit")
@options_command
def fit_command(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    layer: str = typer.Option(..., help="A recorded layer of the atlas."),
    name: str = typer.Option(..., help="Name of the basis; its features become layer LAYER::NAME."),
    fmt: str = FORMAT,
    *,
    options: BasisOptions,
) -> None:
    """Stream the layer's activations over the atlas's images, fit a basis, store it with its fit metrics."""
    import pandas as pd

    from unitlens.basis.fit import fit_basis

    with failing_cleanly(), resumable("nothing half-fitted was written"):
        result = fit_basis(atlas, layer, name, options)
    m = result.metrics
    print_frame(pd.DataFrame([{k: m[k] for k in _FIT_SHOWN} | {"time (s)": round(result.seconds, 1)}]),
                title=f"basis {name}: {options.kind} of {layer} ({options.positions} positions)", name="fit")
    if not result.cached:
        note(f"the activations did not fit --buffer-mb {options.buffer_mb:g}: every pass streamed the model again")
    for text in result.basis.meta["fit"].get("notes", []):
        note(text)
    if result.replaced:
        note(f"replaced the earlier basis '{name}'; its recorded features and every result derived from them (scores, "
             "lens vectors, labels) were removed")
    say(f"record its features with: unitlens basis record {atlas} {name}")


@app.command("record")
@options_command
def record_command(
    atlas: Path = typer.Argument(..., help="Atlas folder."),
    names: list[str] = typer.Argument(..., help="Bases to record (one pass for all)."),
    fmt: str = FORMAT,
    *,
    options: BasisRecordOptions,
) -> None:
    """Record the features of fitted bases as units of derived layers LAYER::NAME (exemplars, statistics)."""

    from unitlens.atlas import Atlas
    from unitlens.basis.recording import record_bases

    with failing_cleanly(), resumable("the images recorded so far are checkpointed in the atlas"):
        result = record_bases(atlas, names, options)
        summary = Atlas(atlas).summary()
    print_frame(summary[summary["layer"].isin(result.layers)].drop(columns=["nonfinite"]),
                title=f"recorded {len(result.layers)} basis layer(s) over {result.n_images} images in "
                      f"{result.seconds:.1f} s", name="layers")
    if result.replaced:
        layers = ",".join(result.replaced)
        note(f"replaced {', '.join(result.replaced)} and removed the results derived from the old features: score "
             f"them again (unitlens mis {atlas} --layers '{layers}', unitlens lens embed {atlas} --layers '{layers}')")
    say(f"score them with: unitlens mis {atlas} --layers '{','.join(result.layers)}'")


@app.command("compare")
@options_command
def compare_command(
    atlas: Path = typer.Argument(..., help="Atlas folder."),
    layer: str = typer.Option(..., help="The recorded layer whose channels and bases are compared."),
    out: Optional[Path] = typer.Option(None, help="Figure file (default: ATLAS/basis/compare-LAYER.png)."),
    fmt: str = FORMAT,
    *,
    options: BasisCompareOptions,
) -> None:
    """The layer's channels and each recorded basis side by side: MIS, lens measures, labels, fit metrics."""
    from contextlib import nullcontext

    from unitlens.atlas import Atlas
    from unitlens.atlas.files import safe_name
    from unitlens.basis.compare import compare_bases
    from unitlens.basis.figures import plot_basis_comparison

    with failing_cleanly():
        res = compare_bases(atlas, layer, options)
        opened = Atlas(atlas)
        path = out or opened.derived_path("basis", f"compare-{safe_name(layer)}.png")
        with opened.writing("basis compare") if out is None else nullcontext():
            plot_basis_comparison(res, path)
    heading = f"{layer}: channels and bases (MIS {res.backend}, lens {res.lens_backend}" + \
        (f", labels {res.labels})" if res.labels else ")")
    if machine_readable():  # one row per unit set, every metric a column
        print_frame(res.table, title=heading, name="comparison")
    else:  # one column per unit set, in groups that fit 80 columns
        shown = res.table.set_index("basis").T.astype(str).map(_short)
        widths = {c: max(len(c), *(len(v) for v in shown[c])) for c in shown.columns}
        for columns in _groups(widths, first=max(len(i) for i in shown.index)):
            part = shown[columns].reset_index().rename(columns={"index": "metric"})
            part.columns.name = None
            print_frame(part, title=heading, name="comparison")
    for text in res.notes:
        note(text)
    say(f"wrote {path}")


def _groups(widths: dict[str, int], first: int, width: int = 80) -> list[list[str]]:
    """The unit-set columns (name -> text width) in groups that fit ``width`` beside the metric column, the first
    ("channels") in every group."""
    names = list(widths)
    head, rest = names[:1], names[1:]
    room = width - 1 - (first + 3) - sum(widths[h] + 3 for h in head)
    groups: list[list[str]] = []
    current: list[str] = []
    used = 0
    for name in rest:
        need = widths[name] + 3
        if current and used + need > room:
            groups.append(head + current)
            current, used = [], 0
        current.append(name)
        used += need
    return [*groups, head + current] if current or not groups else groups


def _short(value: str) -> str:
    """Numbers of the transposed table with 4 significant digits (the cells are strings after transposing)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value else f"{number:.4g}"


@app.command("list")
def list_command(atlas: Path = typer.Argument(..., help="Atlas folder."), fmt: str = FORMAT) -> None:
    """The bases of an atlas: kind, positions, features, fit metrics, and whether they are recorded."""
    from unitlens.basis.store import bases_table

    with failing_cleanly():
        table = bases_table(atlas)
    if not len(table):
        say(f"atlas {atlas} has no basis yet; fit one with unitlens basis fit")
        return
    print_frame(table, title=f"bases of {atlas}", name="bases")
    if not table["recorded"].all():
        say(f"record them with: unitlens basis record {atlas} NAME...")
