"""``unitlens lens …``: SemanticLens commands.

::

    unitlens lens embed ATLAS --backend offline-vl --m 30 --crop none|activation|relevance --layers a,b
    unitlens lens search ATLAS "a text probe"            (needs a backend with a text encoder)
    unitlens lens search ATLAS --image IMG --image DIR   (images, or every image under a folder, averaged)
    unitlens lens label ATLAS --concepts FILE|DIR [--parents FILE] [--threshold 0.025]
    unitlens lens label ATLAS --method clip-dissect|invert|random [--concepts probe|probe-images|FILE] [--probe NAME]
    unitlens lens evaluate-labels ATLAS [--method semanticlens,clip-dissect,invert,random] [--holdout 0.5]
    unitlens lens compare ATLAS_A ATLAS_B
    unitlens lens measures ATLAS
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unitlens.cli.common import (
    FORMAT,
    failing_cleanly,
    group,
    inputs,
    machine_readable,
    note,
    print_frame,
    resumable,
    say,
    short_names,
    tables,
)
from unitlens.cli.options import options_command
from unitlens.lens.options import CompareOptions, EmbedOptions, MeasuresOptions, SearchOptions
from unitlens.probe.options import EvaluationOptions, LabelOptions

app = group("lens", help="SemanticLens: units as vectors in a foundation model's space; search, label, compare, "
                         "measures.")


@app.command("embed")
@options_command
def embed_command(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    verbose: bool = typer.Option(False, "--verbose", help="Also print the work done: (image, crop) keys, cache "
                                                          "hits and seconds per stage."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("layers", "work"),
    *,
    options: EmbedOptions,
) -> None:
    """Embed every unit's concept examples and store θ (mean embedding) and the vector table in the atlas."""
    import pandas as pd

    from unitlens.lens.embed import embed_units

    with failing_cleanly(), resumable("the layers embedded so far and the embedding cache are kept in the atlas"):
        r = embed_units(atlas, options=options, progress=True)
    for message in r.notes:
        note(message)
    if r.embedded:
        metas = {n: r.store.layer_meta(n) for n in r.embedded}
        rows = r.layers().drop(columns=["m", "crop"])
        if verbose:
            rows["lancedb"] = [metas[n]["lancedb"] for n in rows["layer"]]
        settings = {(meta["m"], meta["crop"]) for meta in metas.values()}
        how = ", ".join(f"m={m_} crop={c}" for m_, c in sorted(settings))
        print_frame(rows, title=f"embedded {len(rows)} layers of {atlas} with {r.store.backend} ({how}) -> "
                                f"{r.store.path}", name="layers")
        total = r.seconds.get("total", sum(r.seconds.values()))
        say(f"{r.cache_misses} concept examples embedded and {r.cache_hits} taken from the cache, in {total:.1f} s")
        if verbose:
            print_frame(pd.DataFrame([{"(image, crop) keys": r.n_examples, "cache hits": r.cache_hits,
                                       "newly embedded": r.cache_misses,
                                       **{f"{k} (s)": v for k, v in r.seconds.items()}}]), title="work",
                        name="work")
    if r.skipped:
        say(f"already embedded with the same settings (use --force to redo): {', '.join(r.skipped)}")


@app.command("search")
@inputs("image")
@options_command
def search_command(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    text: Optional[str] = typer.Argument(None, help="Text probe (needs a backend with a text encoder)."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="Probe image or folder (repeatable; averaged)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("units"),
    *,
    options: SearchOptions,
) -> None:
    """Units whose θ is most aligned with a text or image probe: a = cos(θ, probe) − cos(θ, null).

    The table lists each unit's concept-example files; --format csv or json gives their full paths."""
    from unitlens.lens.analysis import search

    with failing_cleanly():
        res = search(atlas, text=text, images=image or None, options=options, progress=True)
    frame = res.frame
    shown = frame.drop(columns=["exemplars"]).assign(
        exemplars=[short_names(p, options.exemplars) for p in frame["exemplars"]])
    what = f"'{res.probe.name}'" if res.probe.kind == "text" else f"{res.probe.n_inputs} image(s)"
    print_frame(shown, title=f"search {what} in {atlas} ({res.backend}, {res.engine}, null "
                             f"{'subtracted' if res.probe.null is not None else 'none'})", name="units", full=frame)
    if frame.shape[0]:
        say(f"top unit's exemplars: {', '.join(frame['exemplars'].iloc[0])}")


SHOWN_UNITS = 20  # labelled units the table lists (--format csv/json and --table labels give every unit)


@app.command("label")
@options_command
def label_command(
    atlas: Path = typer.Argument(..., help="Atlas folder (embedded for semanticlens, with a probe set for the "
                                           "other methods)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("labels", "counts", "parent_counts", "unexpected"),
    *,
    options: LabelOptions,
) -> None:
    """Label every unit with one method (its best concept or formula, or none) into the atlas's label store; count
    units per label and layer."""
    from unitlens.probe.labelling import label_units

    with failing_cleanly():
        res = label_units(atlas, options)
    labelled = res.labelled
    print_frame(labelled.drop(columns="formula", errors="ignore").head(SHOWN_UNITS),
                title=f"{options.method}: best scored units (of {len(labelled)} labelled of {len(res.frame)})",
                name="labels", full=res.frame)
    counts = res.counts
    print_frame(counts.head(60), title=f"units per label and layer ({options.method}"
                                       + (", first 60 rows)" if len(counts) > 60 else ")"), name="counts", full=counts)
    if res.parent_counts is not None:
        print_frame(res.parent_counts, title="units per parent and layer", name="parent_counts")
    if res.unexpected is not None:
        shown = res.unexpected.sort_values("score").head(SHOWN_UNITS)
        print_frame(shown, title=f"unexpected: {len(res.unexpected)} units align with no concept"
                                 + (f" (showing {len(shown)})" if len(shown) < len(res.unexpected) else ""),
                    name="unexpected", full=res.unexpected.sort_values("score"))
    if res.n_constant:
        say(f"{res.n_constant} constant units were not labelled")
    for text in res.notes:
        note(text)
    if res.path:
        say(f"wrote {res.path}")


@app.command("evaluate-labels")
@options_command
def evaluate_labels_command(
    atlas: Path = typer.Argument(..., help="Atlas with a probe set (unitlens probe) and, for semanticlens, an "
                                           "embedding (unitlens lens embed)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("faithfulness", "agreement"),
    *,
    options: EvaluationOptions,
) -> None:
    """Held-out faithfulness of each method's labels: AUC and mean activation difference on probe images not used
    to pick them, per method and layer, and how often methods agree."""
    from unitlens.probe.faithfulness import evaluate_labels

    with failing_cleanly():
        res = evaluate_labels(atlas, options)
    split = res.split
    judged = (f"labels judged on {split['n_heldout']} held-out probe images ({split['n_labelling']} picked them, "
              f"seed {options.seed})")
    agree = "units both methods label, and how many the same"
    if machine_readable():  # one table each, with the layer as a column
        print_frame(res.summary, title=judged, name="faithfulness")
        print_frame(res.agreement, title=agree, name="agreement")
    else:  # per layer, in 80 columns
        short = {"labelled": "labelled", "labelled_share": "share", "mean_auc": "mean AUC", "median_auc": "med AUC",
                 "share_auc_ge_0.9": "AUC≥0.9", "mean_act_diff_std": "Δact/σ"}
        for layer, rows in res.summary.groupby("layer", sort=False):
            print_frame(rows[["method", *short]].rename(columns=short), name="faithfulness",
                        title=f"{layer} ({int(rows['units'].iloc[0])} units): {judged}")
        for layer, rows in res.agreement.groupby("layer", sort=False):
            print_frame(rows.drop(columns="layer").rename(columns={"both_labelled": "both"}), name="agreement",
                        title=f"{layer}: {agree}")
    for text in res.notes:
        note(text)
    for key, path in res.paths.items():
        say(f"wrote {key}: {path}")


SHOWN_UNMATCHED = 20  # unmatched units the table lists (--format csv/json and --table unmatched give every one)


@app.command("compare")
@options_command
def compare_command(
    atlas_a: Path = typer.Argument(..., help="Embedded atlas A."),
    atlas_b: Path = typer.Argument(..., help="Embedded atlas B (same backend)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("similarity", "unmatched"),
    *,
    options: CompareOptions,
) -> None:
    """S(A→B) = mean over units of A of the max cosine to a unit of B, per layer pair; unmatched units of A."""
    from unitlens.lens.analysis import compare

    with failing_cleanly():
        res = compare(atlas_a, atlas_b, options)
    print_frame(res.matrix.reset_index(names="A \\ B"), title=f"S(A→B), A = {atlas_a}, B = {atlas_b} "
                                                             f"({res.backend})", name="similarity")
    print_frame(res.unmatched.head(SHOWN_UNMATCHED),
                title=f"{len(res.unmatched)} of {len(res.best)} units of A have no counterpart in B "
                      f"(max cos < {options.threshold:g})", name="unmatched", full=res.unmatched)


@app.command("measures")
@options_command
def measures_command(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    fmt: str = FORMAT,
    *,
    options: MeasuresOptions,
) -> None:
    """Clarity, polysemanticity and max similarity per unit, redundancy per layer (SemanticLens paper, section
    3.5)."""
    from unitlens.lens.analysis import measures

    with failing_cleanly():
        res = measures(atlas, options=options)
    print_frame(res.layers, title=f"interpretability measures of {atlas} ({res.backend})", name="layers")
    if res.path is not None:
        say(f"wrote metrics clarity, polysemanticity, max_similarity (backend {res.backend}) to "
            f"{Path(atlas) / 'scores.parquet'}; per-layer redundancy to {res.path}")
