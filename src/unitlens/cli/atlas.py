"""``unitlens atlas …``: inspect atlases."""
from __future__ import annotations

from pathlib import Path

import typer

from unitlens.cli.common import failing_cleanly, group, print_frame, say

app = group("atlas", help="Inspect atlases.")


@app.command("info")
def info(path: Path = typer.Argument(..., help="Atlas folder.")) -> None:
    """Print what an atlas holds: provenance, configuration and a per-layer table."""
    from unitlens.atlas import Atlas

    with failing_cleanly():
        atlas = Atlas(path)
        m = atlas.manifest
        cfg = m["config"]
        say(f"[bold]{path}[/]  status: {m['status']}")
        say(f"model {cfg['model']} (weights {cfg['weights']}, hash {cfg['weights_hash']})")
        say(f"data {cfg['dataset']} ({cfg['n_samples']} samples, fingerprint {cfg['dataset_fingerprint']})")
        say(f"k={cfg['k']} spatial={cfg['spatial']} tokens={cfg['tokens']}  versions: "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
        if atlas.complete:
            say(f"{m['n_units']} units in {len(m['layers'])} layers, {m['n_constant']} constant; "
                f"{m['n_images']} images, {m['n_skipped']} skipped; recorded in {m['seconds']:.1f} s")
            print_frame(atlas.summary())
