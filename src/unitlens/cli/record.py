"""``unitlens layers`` and ``unitlens record``: the analysable layers of a model, and the record pass.

Their options are generated from ``ModelOptions`` and ``RecordOptions`` (``cli.options``)."""
from __future__ import annotations

from pathlib import Path

import typer

from unitlens.cli.common import FORMAT, failing_cleanly, load_named_model, print_frame, resumable, say
from unitlens.cli.options import options_command
from unitlens.recording.options import RecordOptions
from unitlens.zoo.options import ModelOptions


@options_command(only={"select": ("layers", "types", "exclude", "keep_first_last", "repeated")})
def layers(fmt: str = FORMAT, *, model: ModelOptions, select: RecordOptions) -> None:
    """List the layers a record pass records (with --checkpoint: also check that the checkpoint fits).

    The architecture is built without weights (on the meta device, in a fraction of a second) and checked as the
    record pass checks it: modules run several times per forward are listed call by call (NAME@1, NAME@2, ...),
    and the layers left out are named."""
    import pandas as pd

    from unitlens.recording.run import select_layers

    with failing_cleanly():  # the check's warning (the layers left out) is printed on stderr
        loaded = load_named_model(model, meta=True)
        infos = select_layers(loaded, None, select)
    print_frame(pd.DataFrame([i.as_dict() for i in infos]).drop(columns=["channel_dim"]), title=model.name,
                name="layers")


@options_command
def record(
    data: str = typer.Option(..., help="'demo', an image folder (class = sub-folder), or a .txt/.csv file list."),
    out: Path = typer.Option(..., help="Atlas folder to write (resumed if a run stopped)."),
    fmt: str = FORMAT,
    *,
    model: ModelOptions,
    options: RecordOptions,
) -> None:
    """Record the top-k and bottom-k exemplars and statistics of every unit into an atlas."""
    import pandas as pd

    from unitlens.atlas.layout import MANIFEST
    from unitlens.atlas.lock import check_writable
    from unitlens.data import load_dataset
    from unitlens.recording import record as run_record

    with failing_cleanly(), resumable(f"the images recorded so far are checkpointed in {out}"):
        if options.force or not (out / MANIFEST).is_file():  # no finished atlas there: --out must be writable
            check_writable(out.expanduser().resolve())
        loaded = load_named_model(model)
        dataset = load_dataset(data, loaded.transform)
        result = run_record(loaded, dataset, out, options=options)
    if result.already_complete:
        say(f"{out} is already complete; nothing to do (use --force to record again).")
        return
    m = result.atlas.manifest
    print_frame(pd.DataFrame([{
        "layers": len(m.layers), "units": m.n_units, "constant units": m.n_constant,
        "non-finite units": m.n_nonfinite or 0,
        "images": m.n_images, "skipped": m.n_skipped, "time (s)": result.seconds,
        "images/s": result.images_per_s}]), title=f"recorded {model.name} on {data} -> {out}", name="record")
    if result.resumed_from:
        say(f"resumed from image {result.resumed_from}")
