"""``unitlens probe ATLAS --data PROBE_SPEC``: activations of every unit of some layers on a labelled probe set.

::

    unitlens probe ATLAS --data concepts/           (one sub-folder of images per concept)
    unitlens probe ATLAS --data probe.csv --columns category,subcategory [--layers a,b] [--name NAME]
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.cli.common import FORMAT, failing_cleanly, print_frame, resumable, say, split_list, tables
from unitlens.probe.defaults import BATCH_SIZE, MAX_ACTIVATIONS, PROBE_NAME


def probe(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    data: Path = typer.Option(..., help="Probe set: a folder of concept folders, or a CSV with a path column and "
                                        "concept columns (0/1 or concept names)."),
    columns: Optional[str] = typer.Option(None, help="Concept columns of a CSV, comma-separated (default: all but "
                                                     "path)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs (default: every recorded "
                                                    "layer)."),
    name: str = typer.Option(PROBE_NAME, help="Name of this probe set in the atlas (several can be kept)."),
    spatial: Optional[str] = typer.Option(None, help="Pooling of conv maps: mean or max (default: the atlas's)."),
    batch_size: int = typer.Option(BATCH_SIZE, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
    max_activations: int = typer.Option(MAX_ACTIVATIONS, help="Refuse passes of more units x images than this "
                                                              "(4 bytes each, in memory and on disk)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("concepts", "layers"),
) -> None:
    """Record the activation of every unit of the atlas's layers on every probe image, stored in the atlas."""
    import pandas as pd

    from unitlens.probe.activations import probe_atlas

    with failing_cleanly(), resumable("nothing half-probed was written"):
        r = probe_atlas(atlas, data, layers=split_list(layers), name=name, columns=split_list(columns),
                        spatial=spatial, batch_size=batch_size, device=device, max_activations=max_activations)
    store = r.store
    member = store.membership
    print_frame(pd.DataFrame({"concept": store.concepts, "images": member.sum(0)}),
                title=f"probe set '{store.name}': {r.n_images} images, {len(store.concepts)} concepts", name="concepts")
    print_frame(pd.DataFrame([{"layer": n, "units": u} for n, u in store.meta["layers"].items()]),
                title=f"{r.n_units} units probed ({store.meta['spatial']} pooling)", name="layers")
    say(f"{r.n_images} images in {r.seconds:.1f} s ({r.images_per_s:.1f} images/s)"
        + (f"; {len(r.skipped)} unreadable skipped" if r.skipped else "") + f" -> {store.path}")
