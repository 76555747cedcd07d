"""``unitlens featviz ATLAS --layers L``: feature visualisations of an atlas's units, stored in the atlas.

Its options are generated from ``FeatvizOptions`` (``cli.options``)."""
from __future__ import annotations

from pathlib import Path

import typer

from unitlens.cli.common import FORMAT, failing_cleanly, print_frame, resumable, say
from unitlens.cli.options import options_command
from unitlens.featviz.options import FeatvizOptions


@options_command
def featviz(atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."), fmt: str = FORMAT, *,
            options: FeatvizOptions) -> None:
    """Optimise images that drive each chosen unit up and down (K each), from noise, and store them in the atlas
    beside the activations they reach and the unit's natural extremes. A stopped run resumes where it was."""
    import pandas as pd

    from unitlens.featviz.run import featviz_atlas
    from unitlens.featviz.store import FeatvizStore, layer_summary

    with failing_cleanly(), resumable(f"the units finished so far are stored in {atlas}"):
        run = featviz_atlas(atlas, options=options, progress=True)
    with failing_cleanly():
        store = FeatvizStore(atlas)
        rows = [{"layer": layer, "made now": len(made), "stored before": len(run.stored[layer]),
                 **layer_summary(store.table(layer))} for layer, made in run.made.items()]
    o = run.options
    assert o is not None
    print_frame(pd.DataFrame(rows), title=f"feature visualisations of {atlas} ({o.steps} steps, {o.size} px, "
                                          f"{o.per_side} per side, seed {o.seed})", name="featviz")
    made = sum(len(u) for u in run.made.values())
    if made:
        say(f"{made} units in {run.seconds:.1f} s ({run.units_per_s:.2f} units/s); images in "
            f"{store.root}; score them with: unitlens mis {atlas} --explanations featviz")
    else:
        say("every chosen unit was visualised already; nothing to do (--force makes them again)")
