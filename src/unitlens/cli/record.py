"""``unitlens layers`` and ``unitlens record``: the analysable layers of a model, and the record pass."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.cli.common import (
    CHECKPOINT,
    CHECKPOINT_STRICT,
    FORMAT,
    NUM_CLASSES,
    RANDOM,
    SEED,
    failing_cleanly,
    load_named_model,
    print_frame,
    say,
    split_list,
)
from unitlens.recording.defaults import BATCH_SIZE, SPATIAL_DEFAULT, TOKENS_DEFAULT, K


def layers(
    model: str = typer.Option("efficientnet_lite0", help="Model name (efficientnet_lite0, timm:<n>, ...)."),
    types: Optional[str] = typer.Option(None, help="Comma-separated layer types (Conv,Linear,BatchNorm,...)."),
    keep_first_last: bool = typer.Option(False, help="Keep the first and last layer (MIS skips them)."),
    random: bool = typer.Option(False, "--random", help="Accepted as in record; layers never need pretrained "
                                                        "weights (the architecture is built with random init)."),
    checkpoint: Optional[Path] = CHECKPOINT,
    num_classes: Optional[int] = NUM_CLASSES,
    checkpoint_strict: bool = CHECKPOINT_STRICT,
    fmt: str = FORMAT,
) -> None:
    """List the analysable layers of a model (with --checkpoint: also check that the checkpoint fits)."""
    import pandas as pd

    from unitlens.zoo import enumerate_units
    from unitlens.zoo.units import LAYER_TYPES

    with failing_cleanly():
        loaded = load_named_model(model, True, checkpoint, num_classes, checkpoint_strict)
        infos = enumerate_units(loaded.model, types=split_list(types) or LAYER_TYPES,
                                skip_first_last=not keep_first_last)
    print_frame(pd.DataFrame([i.as_dict() for i in infos]).drop(columns=["channel_dim"]), title=model,
                name="layers")


def record(
    model: str = typer.Option(..., help="efficientnet_lite0|1|2, timm:<name>, torchvision:<name>, or a saved module."),
    data: str = typer.Option(..., help="'demo', an image folder (class = sub-folder), or a .txt/.csv file list."),
    out: Path = typer.Option(..., help="Atlas folder to write (resumed if a run stopped)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs to record."),
    types: Optional[str] = typer.Option(None, help="Comma-separated layer types (default: all analysable)."),
    exclude: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs to leave out."),
    keep_first_last: bool = typer.Option(False, help="Keep the model's first and last layer."),
    k: int = typer.Option(K, min=1, help="Exemplars kept per unit and direction (MIS needs N*(K+1) = 200)."),
    spatial: str = typer.Option(SPATIAL_DEFAULT, help="Reduce (B,C,H,W) maps over space: mean or max."),
    tokens: str = typer.Option(TOKENS_DEFAULT, help="Reduce (B,T,C) token outputs: mean, cls or max."),
    batch_size: int = typer.Option(BATCH_SIZE, min=1, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when present)."),
    workers: Optional[int] = typer.Option(None, min=0, help="Data-loading worker processes."),
    checkpoint: Optional[Path] = CHECKPOINT,
    num_classes: Optional[int] = NUM_CLASSES,
    checkpoint_strict: bool = CHECKPOINT_STRICT,
    random: bool = RANDOM,
    seed: int = SEED,
    force: bool = typer.Option(False, help="Re-record even if the atlas is complete."),
    content_hash: Optional[bool] = typer.Option(
        None, "--content-hash/--no-content-hash",
        help="Fingerprint the dataset and key cached embeddings by each file's bytes (hashed once, kept in "
             "samples.parquet; the default for new atlases). --no-content-hash reads no file for it, for huge "
             "datasets, at a risk: an image replaced by another of the same size goes unnoticed (same fingerprint, "
             "old cached embedding). Default: as the atlas at --out was recorded."),
    fmt: str = FORMAT,
) -> None:
    """Record the top-k and bottom-k exemplars and statistics of every unit into an atlas."""
    import pandas as pd

    from unitlens.atlas.layout import MANIFEST
    from unitlens.atlas.lock import check_writable
    from unitlens.data import load_dataset
    from unitlens.recording import record as run_record
    from unitlens.zoo.units import LAYER_TYPES

    with failing_cleanly():
        if force or not (out / MANIFEST).is_file():  # no finished atlas there: --out must be writable, say so now
            check_writable(out.expanduser().resolve())
        loaded = load_named_model(model, random, checkpoint, num_classes, checkpoint_strict, seed)
        dataset = load_dataset(data, loaded.transform)
        try:
            result = run_record(loaded, dataset, out, split_list(layers), k=k, spatial=spatial, tokens=tokens,
                                batch_size=batch_size, device=device, num_workers=workers, force=force,
                                types=split_list(types) or LAYER_TYPES, exclude=split_list(exclude),
                                keep_first_last=keep_first_last, content_hash=content_hash)
        except KeyboardInterrupt:
            say(f"[yellow]interrupted:[/] the images recorded so far are checkpointed in {out}; run the same "
                "command again to resume from there")
            raise typer.Exit(code=130) from None
    if result.already_complete:
        say(f"{out} is already complete; nothing to do (use --force to record again).")
        return
    m = result.atlas.manifest
    print_frame(pd.DataFrame([{
        "layers": len(m["layers"]), "units": m["n_units"], "constant units": m["n_constant"],
        "non-finite units": m.get("n_nonfinite", 0),
        "images": m["n_images"], "skipped": m["n_skipped"], "time (s)": result.seconds,
        "images/s": result.images_per_s}]), title=f"recorded {model} on {data} -> {out}", name="record")
    if result.resumed_from:
        say(f"resumed from image {result.resumed_from}")
