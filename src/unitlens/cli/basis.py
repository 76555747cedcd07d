"""``unitlens basis …``: ``fit`` a basis of a layer, ``record`` its features as a derived layer, ``compare`` them
with the layer's channels, ``list`` the bases of an atlas."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.basis.defaults import (
    BATCH_SIZE,
    BUFFER_MB,
    EXPANSION,
    KINDS,
    LEARNING_RATE,
    MAX_EPOCHS,
    POSITIONS_DEFAULT,
    SAE_BATCH_SIZE,
    STEPS,
    K,
)
from unitlens.cli.common import (
    FORMAT,
    failing_cleanly,
    group,
    machine_readable,
    note,
    print_frame,
    resumable,
    say,
    split_list,
)

app = group("basis", help="Units beyond channels: SAE features, PCA/ICA/NMF components, random or your own "
                          "directions, recorded and measured like channels.")

_FIT_SHOWN = ("n_samples", "features", "r2", "explained_variance", "dead_features", "mean_active")


@app.command("fit")
def fit_command(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    layer: str = typer.Option(..., help="A recorded layer of the atlas."),
    kind: str = typer.Option(..., help=f"{'|'.join(KINDS)}."),
    name: str = typer.Option(..., help="Name of the basis; its features become layer LAYER::NAME."),
    features: Optional[int] = typer.Option(None, help="Number of features (default: expansion x channels for "
                                                        "SAEs, the layer's width otherwise)."),
    expansion: float = typer.Option(EXPANSION, help="SAE features per channel when --features is not given."),
    k: int = typer.Option(K, help="Active features per sample (TopK / BatchTopK SAEs, --nonlinearity topk)."),
    positions: str = typer.Option(POSITIONS_DEFAULT, help="spatial (every position / token is a sample) or image "
                                                          "(the record pass's per-image vector)."),
    epochs: Optional[int] = typer.Option(None, help=f"SAE training epochs (default: about {STEPS:,} steps, at most "
                                                     f"{MAX_EPOCHS} epochs)."),
    lr: float = typer.Option(LEARNING_RATE, help="SAE learning rate (Adam)."),
    sae_batch_size: int = typer.Option(SAE_BATCH_SIZE, help="Samples per SAE optimisation step."),
    seed: int = typer.Option(0, help="Seed of the fit (initialisation, shuffling, random directions)."),
    matrix: Optional[Path] = typer.Option(None, help="--kind file: .safetensors/.pt/.npy with 'weight' "
                                                      "(features, channels) and optional bias, center, ..."),
    nonlinearity: str = typer.Option("none", help="--kind file: none, relu, topk (--k) or threshold."),
    batch_size: int = typer.Option(BATCH_SIZE, help="Images per forward pass."),
    buffer_mb: float = typer.Option(BUFFER_MB, help="Activations held in memory at most (MiB); larger streams "
                                                    "are read again each pass."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
    force: bool = typer.Option(False, help="Replace a basis of the same name (and its recorded features)."),
    fmt: str = FORMAT,
) -> None:
    """Stream the layer's activations over the atlas's images, fit a basis, store it with its fit metrics."""
    import pandas as pd

    from unitlens.basis.fit import fit_basis
    from unitlens.basis.kinds import FitOptions

    with failing_cleanly(), resumable("nothing half-fitted was written"):
        options = FitOptions(kind=kind, features=features, expansion=expansion, k=k, epochs=epochs, lr=lr,
                             batch_size=sae_batch_size, seed=seed, matrix=str(matrix) if matrix else None,
                             nonlinearity=nonlinearity, device=device)
        result = fit_basis(atlas, layer, name, options, positions=positions, batch_size=batch_size,
                           buffer_mb=buffer_mb, force=force)
    m = result.metrics
    print_frame(pd.DataFrame([{k: m[k] for k in _FIT_SHOWN} | {"time (s)": round(result.seconds, 1)}]),
                title=f"basis {name}: {kind} of {layer} ({positions} positions)", name="fit")
    if not result.cached:
        note(f"the activations did not fit --buffer-mb {buffer_mb:g}: every pass streamed the model again")
    for text in result.basis.meta["fit"].get("notes", []):
        note(text)
    if result.replaced:
        note(f"replaced the earlier basis '{name}'; its recorded features and every result derived from them (scores, "
             "lens vectors, labels) were removed")
    say(f"record its features with: unitlens basis record {atlas} {name}")


@app.command("record")
def record_command(
    atlas: Path = typer.Argument(..., help="Atlas folder."),
    names: list[str] = typer.Argument(..., help="Bases to record (one pass for all)."),
    batch_size: int = typer.Option(BATCH_SIZE, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ..."),
    force: bool = typer.Option(False, help="Record a basis again that is recorded already."),
    fmt: str = FORMAT,
) -> None:
    """Record the features of fitted bases as units of derived layers LAYER::NAME (exemplars, statistics)."""

    from unitlens.atlas import Atlas
    from unitlens.basis.recording import record_bases

    with failing_cleanly(), resumable("the images recorded so far are checkpointed in the atlas"):
        result = record_bases(atlas, names, batch_size=batch_size, device=device, force=force)
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
def compare_command(
    atlas: Path = typer.Argument(..., help="Atlas folder."),
    layer: str = typer.Option(..., help="The recorded layer whose channels and bases are compared."),
    backend: Optional[str] = typer.Option(None, help="MIS backend of the scores (default: offline, or the only one)."),
    lens_backend: Optional[str] = typer.Option(None, help="Lens backend of clarity, labels, ... (default: the "
                                                          "lens default, or the only one)."),
    bases: Optional[str] = typer.Option(None, help="Comma-separated basis names to show (default: all recorded)."),
    out: Optional[Path] = typer.Option(None, help="Figure file (default: ATLAS/basis/compare-LAYER.png)."),
    fmt: str = FORMAT,
) -> None:
    """The layer's channels and each recorded basis side by side: MIS, lens measures, labels, fit metrics."""
    from unitlens.atlas import Atlas
    from unitlens.atlas.files import safe_name
    from unitlens.basis.compare import compare_bases
    from unitlens.report.basis_plots import plot_basis_comparison

    with failing_cleanly():
        res = compare_bases(atlas, layer, backend=backend, lens_backend=lens_backend, bases=split_list(bases))
        opened = Atlas(atlas)
        path = out or opened.derived_path("basis", f"compare-{safe_name(layer)}.png")
        title = f"{layer} · MIS {res.backend or '-'} · lens {res.lens_backend or '-'}"
        with opened.writing("basis compare"):
            plot_basis_comparison(res.mis, res.table, path, title, res.clarity, res.mis_nonsparse)
    heading = f"{layer}: channels and bases (MIS {res.backend}, lens {res.lens_backend})"
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
def list_command(atlas: Path = typer.Argument(..., help="Atlas folder.")) -> None:
    """The bases of an atlas: kind, positions, features, fit metrics, and whether they are recorded."""
    from unitlens.atlas import Atlas
    from unitlens.basis.store import list_bases, load_basis

    with failing_cleanly():
        opened = Atlas(atlas)
        names = list_bases(opened)
        lines = []
        for name in names:
            b = load_basis(opened, name)
            m = b.meta["metrics"]
            state = "recorded" if name in opened.derived_layers else "not recorded"
            lines.append(f"{name}  ({state})\n  {b.kind}, {b.positions} positions, {b.encoder.features} features: "
                         f"r2 {m.get('r2'):.4g}, dead {m.get('dead_features')}, mean active {m.get('mean_active'):.4g}")
    if not names:
        say(f"atlas {atlas} has no basis yet; fit one with unitlens basis fit")
    for line in lines:
        say(line)
    if any("not recorded" in line for line in lines):
        say(f"record them with: unitlens basis record {atlas} NAME...")
