"""The ``unitlens`` command line: mirrors the Python API, with progress bars and plain tables."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.audit.commands import audit_app
from unitlens.lens.commands import lens_app, plot_lens_command
from unitlens.mis.commands import mis_app, plot_mis_command
from unitlens.relevance.commands import graph_command, relevance_command
from unitlens.report.console import console, fail, print_frame, split_list

app = typer.Typer(help="Measure and explain every unit of a vision model.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
atlas_app = typer.Typer(help="Inspect atlases.", no_args_is_help=True)
plot_app = typer.Typer(help="Write figures (PNG).", no_args_is_help=True)
app.add_typer(atlas_app, name="atlas")
app.add_typer(mis_app, name="mis")
app.add_typer(lens_app, name="lens")
app.add_typer(plot_app, name="plot")
app.add_typer(audit_app, name="audit")
plot_app.command("mis")(plot_mis_command)
plot_app.command("lens")(plot_lens_command)
app.command("relevance")(relevance_command)
app.command("graph")(graph_command)


@app.command()
def layers(
    model: str = typer.Option("efficientnet_lite0", help="Model name (efficientnet_lite0, timm:<n>, ...)."),
    types: Optional[str] = typer.Option(None, help="Comma-separated layer types (Conv,Linear,BatchNorm,...)."),
    keep_first_last: bool = typer.Option(False, help="Keep the first and last layer (MIS skips them)."),
) -> None:
    """List the analysable layers of a model."""
    import pandas as pd

    from unitlens.zoo import enumerate_units, load_model
    from unitlens.zoo.units import LAYER_TYPES

    try:
        loaded = load_model(model, pretrained=False)
        infos = enumerate_units(loaded.model, types=split_list(types) or LAYER_TYPES, skip_first_last=not keep_first_last)
    except (ValueError, RuntimeError) as err:
        fail(err)
    print_frame(pd.DataFrame([i.as_dict() for i in infos]).drop(columns=["channel_dim"]), title=model)


@app.command()
def record(
    model: str = typer.Option(..., help="efficientnet_lite0|1|2, timm:<name>, torchvision:<name>, or a saved module."),
    data: str = typer.Option(..., help="'demo', an image folder (class = sub-folder), or a .txt/.csv file list."),
    out: Path = typer.Option(..., help="Atlas folder to write (resumed if a run stopped)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs to record."),
    types: Optional[str] = typer.Option(None, help="Comma-separated layer types (default: all analysable)."),
    exclude: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs to leave out."),
    keep_first_last: bool = typer.Option(False, help="Keep the model's first and last layer."),
    k: int = typer.Option(200, help="Exemplars kept per unit and direction (MIS needs N*(K+1) = 200)."),
    spatial: str = typer.Option("mean", help="Reduce (B,C,H,W) maps over space: mean or max."),
    tokens: str = typer.Option("mean", help="Reduce (B,T,C) token outputs: mean, cls or max."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when present)."),
    workers: Optional[int] = typer.Option(None, help="Data-loading worker processes."),
    checkpoint: Optional[Path] = typer.Option(None, help="Local state dict to load into the architecture."),
    random: bool = typer.Option(False, "--random", help="Random init instead of pretrained weights."),
    force: bool = typer.Option(False, help="Re-record even if the atlas is complete."),
) -> None:
    """Record the top-k and bottom-k exemplars and statistics of every unit into an atlas."""
    import pandas as pd

    from unitlens.data import load_dataset
    from unitlens.record import record as run_record
    from unitlens.zoo import enumerate_units, load_model
    from unitlens.zoo.units import LAYER_TYPES

    try:
        loaded = load_model(model, pretrained=not random, checkpoint=checkpoint)
        dataset = load_dataset(data, loaded.transform)
        infos = enumerate_units(loaded.model, types=split_list(types) or LAYER_TYPES, include=split_list(layers),
                                exclude=split_list(exclude), skip_first_last=not keep_first_last)
        result = run_record(loaded, dataset, out, infos, k=k, spatial=spatial, tokens=tokens,
                            batch_size=batch_size, device=device, num_workers=workers, force=force)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        fail(err)
    if result.already_complete:
        console.print(f"{out} is already complete; nothing to do (use --force to record again).")
    else:
        m = result.atlas.manifest
        print_frame(pd.DataFrame([{
            "layers": len(m["layers"]), "units": m["n_units"], "constant units": m["n_constant"],
            "images": m["n_images"], "skipped": m["n_skipped"], "time (s)": result.seconds,
            "images/s": result.images_per_s}]), title=f"recorded {model} on {data} -> {out}")
        if result.resumed_from:
            console.print(f"resumed from image {result.resumed_from}")


@atlas_app.command("info")
def atlas_info(path: Path = typer.Argument(..., help="Atlas folder.")) -> None:
    """Print what an atlas holds: provenance, configuration and a per-layer table."""
    from unitlens.atlas import Atlas, AtlasError

    try:
        atlas = Atlas(path)
        m = atlas.manifest
        cfg = m["config"]
        console.print(f"[bold]{path}[/]  status: {m['status']}")
        console.print(f"model {cfg['model']} (weights {cfg['weights']}, hash {cfg['weights_hash']})")
        console.print(f"data {cfg['dataset']} ({cfg['n_samples']} samples, fingerprint {cfg['dataset_fingerprint']})")
        console.print(f"k={cfg['k']} spatial={cfg['spatial']} tokens={cfg['tokens']}  versions: "
                      + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
        if atlas.complete:
            console.print(f"{m['n_units']} units in {len(m['layers'])} layers, {m['n_constant']} constant; "
                          f"{m['n_images']} images, {m['n_skipped']} skipped; recorded in {m['seconds']:.1f} s")
            print_frame(atlas.summary())
    except (AtlasError, KeyError) as err:
        fail(err)


if __name__ == "__main__":
    app()
