"""``unitlens atlas …``: inspect and verify atlases."""
from __future__ import annotations

from pathlib import Path

import typer

from unitlens.cli.common import failing_cleanly, group, print_frame, say

app = group("atlas", help="Inspect and verify atlases.")


@app.command("info")
def info(path: Path = typer.Argument(..., help="Atlas folder.")) -> None:
    """Print what an atlas holds: provenance, configuration and a per-layer table."""
    from unitlens.atlas import Atlas

    with failing_cleanly():
        atlas = Atlas(path)
        m = atlas.manifest
        cfg = m.get("config", {})
        say(f"[bold]{path}[/]  status: {m['status']}")
        say(f"model {cfg.get('model')} (weights {cfg.get('weights')}, hash {cfg.get('weights_hash')})")
        hashed = "content hashes" if cfg.get("content_hash") else "paths and sizes only"
        say(f"data {cfg.get('dataset')} ({cfg.get('n_samples')} samples, fingerprint {cfg.get('dataset_fingerprint')}"
            f" of {hashed})")
        say(f"k={cfg.get('k')} spatial={cfg.get('spatial')} tokens={cfg.get('tokens')}  versions: "
            + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()))
        if atlas.complete:
            say(f"{m.get('n_units')} units in {len(m['layers'])} layers, {m.get('n_constant')} constant; "
                f"{m.get('n_images')} images, {m.get('n_skipped')} skipped; recorded in {m.get('seconds', 0):.1f} s")
            print_frame(atlas.summary())


@app.command("verify")
def verify(
    path: Path = typer.Argument(..., help="Atlas folder."),
    images: bool = typer.Option(True, help="Also check that every image is still there and, where the atlas holds "
                                           "content hashes, that files with new times still have the recorded bytes."),
) -> None:
    """Check every file of an atlas: readable, shapes consistent, ids in range, derived results of this atlas.

    Prints the findings (errors and warnings one per row, passed checks summed up per area) and exits with
    status 1 when something is wrong.
    """
    from unitlens.atlas.verify import verify_atlas

    with failing_cleanly():
        result = verify_atlas(path, images=images)
    print_frame(result.table(), title=f"verify {path}")
    errors = result.errors
    if len(errors):
        say(f"[bold red]{len(errors)} problem(s)[/] in {path}; each row above names the file and the fix.")
        raise typer.Exit(code=1)
    say(f"{path}: every check passed.")
