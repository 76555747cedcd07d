"""``unitlens atlas …``: inspect, verify and upgrade atlases (``verify``'s options come from ``VerifyOptions``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.atlas.options import VerifyOptions
from unitlens.cli.common import FORMAT, error, failing_cleanly, group, machine_readable, print_frame, say, tables
from unitlens.cli.options import options_command

app = group("atlas", help="Inspect, verify and upgrade atlases.")


@app.command("info")
def info(path: Path = typer.Argument(..., help="Atlas folder."), fmt: str = FORMAT,
         table: Optional[str] = tables("atlas", "layers")) -> None:
    """Print what an atlas holds: provenance, configuration and a per-layer table."""
    import pandas as pd

    from unitlens.atlas import Atlas

    with failing_cleanly():
        atlas = Atlas(path)
        m = atlas.manifest
        cfg = m.config.as_dict()
        if machine_readable() or table == "atlas":
            facts = {"atlas": str(path), "status": m.status, "format_version": m.format_version,
                     **{k: v for k, v in cfg.items() if k != "layers"},
                     **{f"{k}_version": v for k, v in m.versions.items()},
                     **{k: v for k in ("n_units", "n_constant", "n_images", "n_skipped", "seconds")
                        if (v := getattr(m, k)) is not None}}
            print_frame(pd.DataFrame([facts]), title=f"atlas {path}", name="atlas")
        else:
            say(f"[bold]{path}[/]  status: {m.status}  format version {m.format_version}")
            say(f"model {cfg['model']} (weights {cfg['weights']}, hash {cfg['weights_hash']})")
            say(f"data {cfg['dataset']} ({cfg['n_samples']} samples, fingerprint {cfg['dataset_fingerprint']})")
            say(f"k={cfg['k']} spatial={cfg['spatial']} tokens={cfg['tokens']}  versions: "
                + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
        if atlas.complete:
            if not machine_readable():
                say(f"{m.n_units} units in {len(m.layers)} layers, {m.n_constant} constant; "
                    f"{m.n_images} images, {m.n_skipped} skipped; recorded in {m.seconds or 0:.1f} s")
            print_frame(atlas.summary(), title="layers", name="layers")


@app.command("verify")
@options_command
def verify(path: Path = typer.Argument(..., help="Atlas folder."), fmt: str = FORMAT, *,
           options: VerifyOptions) -> None:
    """Check every file of an atlas: readable, shapes consistent, ids in range, derived results of this atlas.

    Prints the findings (errors and warnings one per row, passed checks summed up per area) and exits with
    status 1 when something is wrong.
    """
    from unitlens.atlas.verify import verify_atlas

    with failing_cleanly():
        result = verify_atlas(path, options)
    print_frame(result.table(), title=f"verify {path}", name="checks", key=("check", "status", "detail"))
    errors = result.errors
    if len(errors):
        error(f"{len(errors)} problem(s) in {path}; each row of the table names the file and the fix.")
        raise typer.Exit(code=1)
    say(f"{path}: every check passed.")


@app.command("upgrade")
def upgrade(path: Path = typer.Argument(..., help="Atlas folder.")) -> None:
    """Rewrite an atlas written by an older unitlens in the current format (its old manifest kept beside it).

    Says what changed; an atlas already in the current format is left as it is.
    """
    from unitlens.atlas.upgrade import upgrade_atlas

    with failing_cleanly():
        done = upgrade_atlas(path)
    if not done.changes:
        say(f"{path} is already in format version {done.to_version}; nothing to do.")
        return
    say(f"{path}: format version {done.from_version} -> {done.to_version} (the old manifest is kept in "
        f"{done.backup})")
    for change in done.changes:
        say(f"  {change}")
