"""``unitlens atlas …``: inspect atlases."""
from __future__ import annotations

from pathlib import Path

import typer

from unitlens.cli.common import FORMAT, failing_cleanly, group, machine_readable, print_frame, say

app = group("atlas", help="Inspect atlases.")


@app.command("info")
def info(path: Path = typer.Argument(..., help="Atlas folder."), fmt: str = FORMAT) -> None:
    """Print what an atlas holds: provenance, configuration and a per-layer table."""
    import pandas as pd

    from unitlens.atlas import Atlas

    with failing_cleanly():
        atlas = Atlas(path)
        m = atlas.manifest
        cfg = m["config"]
        if machine_readable():
            facts = {"atlas": str(path), "status": m["status"], **{k: v for k, v in cfg.items() if k != "layers"},
                     **{f"{k}_version": v for k, v in m["versions"].items()},
                     **{k: m[k] for k in ("n_units", "n_constant", "n_images", "n_skipped", "seconds") if k in m}}
            print_frame(pd.DataFrame([facts]), title=f"atlas {path}", name="atlas")
        else:
            say(f"[bold]{path}[/]  status: {m['status']}")
            say(f"model {cfg['model']} (weights {cfg['weights']}, hash {cfg['weights_hash']})")
            say(f"data {cfg['dataset']} ({cfg['n_samples']} samples, fingerprint {cfg['dataset_fingerprint']})")
            say(f"k={cfg['k']} spatial={cfg['spatial']} tokens={cfg['tokens']}  versions: "
                + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
        if atlas.complete:
            if not machine_readable():
                say(f"{m['n_units']} units in {len(m['layers'])} layers, {m['n_constant']} constant; "
                    f"{m['n_images']} images, {m['n_skipped']} skipped; recorded in {m['seconds']:.1f} s")
            print_frame(atlas.summary(), title="layers", name="layers")
