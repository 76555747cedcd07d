"""``unitlens probe ATLAS --data PROBE_SPEC``: activations of every unit of some layers on a labelled probe set.

::

    unitlens probe ATLAS --data concepts/           (one sub-folder of images per concept)
    unitlens probe ATLAS --data probe.csv --columns category,subcategory [--layers a,b] [--name NAME]

Its options are generated from ``ProbeOptions`` (``cli.options``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.cli.common import FORMAT, failing_cleanly, print_frame, resumable, say, tables
from unitlens.cli.options import options_command
from unitlens.probe.options import ProbeOptions


@options_command
def probe(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    data: Path = typer.Option(..., help="Probe set: a folder of concept folders, or a CSV with a path column and "
                                        "concept columns (0/1 or concept names)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("concepts", "layers"),
    *,
    options: ProbeOptions,
) -> None:
    """Record the activation of every unit of the atlas's layers on every probe image, stored in the atlas."""
    import pandas as pd

    from unitlens.probe.activations import record_probe

    with failing_cleanly(), resumable("nothing half-probed was written"):
        r = record_probe(atlas, data, options)
    store = r.store
    member = store.membership
    print_frame(pd.DataFrame({"concept": store.concepts, "images": member.sum(0)}),
                title=f"probe set '{store.name}': {r.n_images} images, {len(store.concepts)} concepts", name="concepts")
    print_frame(pd.DataFrame([{"layer": n, "units": u} for n, u in store.meta["layers"].items()]),
                title=f"{r.n_units} units probed ({store.meta['spatial']} pooling)", name="layers")
    say(f"{r.n_images} images in {r.seconds:.1f} s ({r.images_per_s:.1f} images/s)"
        + (f"; {len(r.skipped)} unreadable skipped" if r.skipped else "") + f" -> {store.path}")
