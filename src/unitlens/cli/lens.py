"""``unitlens lens …``: SemanticLens commands.

::

    unitlens lens embed ATLAS --backend offline-vl --m 30 --crop none|activation|relevance --layers a,b
    unitlens lens search ATLAS "a text probe"            (needs a backend with a text encoder)
    unitlens lens search ATLAS --image IMG --image DIR   (images, or every image under a folder, averaged)
    unitlens lens label ATLAS --concepts FILE|DIR [--parents FILE] [--threshold 0.025]
    unitlens lens label ATLAS --method clip-dissect|invert [--concepts probe|probe-images|FILE|DIR] [--probe NAME]
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
    machine_readable,
    note,
    print_frame,
    resumable,
    say,
    short_names,
    split_list,
    tables,
)
from unitlens.cli.options import options_command
from unitlens.lens.defaults import IMAGE_NULL, LABEL_THRESHOLD, TEXT_NULL
from unitlens.lens.options import CompareOptions, EmbedOptions, MeasuresOptions, SearchOptions
from unitlens.probe.defaults import BASELINE, BEAM, HOLDOUT, LENGTH, METHODS, PROBE_NAME, TOP_K
from unitlens.probe.defaults import SEED as SPLIT_SEED

PROBE_CONCEPTS = ("probe", "probe-images")
# the labellers' own options, shared by lens label and lens evaluate-labels
INVERT_LENGTH = typer.Option(LENGTH, help="invert: concepts per formula at most.")
INVERT_BEAM = typer.Option(BEAM, help="invert: formulas kept per unit and search step.")
CLIP_DISSECT_TOP_K = typer.Option(TOP_K, help="clip-dissect: images in a unit's soft top set.")

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


@app.command("label")
def label_command(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    concepts: Optional[str] = typer.Option(None, help="Text file (one concept per line) or folder of concept image "
                                                      "folders; with a probe set also 'probe' (its concept names "
                                                      "as text, the default of clip-dissect and invert) or "
                                                      "'probe-images' (its images per concept)."),
    method: str = typer.Option("semanticlens", help="semanticlens (θ vs concept probes), clip-dissect (soft-WPMI on "
                                                    "a probe set) or invert (AUC-best formula on a probe set)."),
    parents: Optional[Path] = typer.Option(None, help="YAML/JSON concept -> parent mapping (dissection counts)."),
    threshold: float = typer.Option(LABEL_THRESHOLD, help="Units whose best alignment is below this get 'none'."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers/globs (default: all embedded)."),
    backend: Optional[str] = typer.Option(None, help="Which embedding (needed when the atlas has several)."),
    show_units: int = typer.Option(20, help="Labelled units to list (best aligned first)."),
    image_null: str = typer.Option(IMAGE_NULL, help="Null for image-folder concepts: dataset or none."),
    text_null: str = typer.Option(TEXT_NULL, help="Null for text concepts: template or none."),
    probe: str = typer.Option(PROBE_NAME, help="Probe set (from unitlens probe) of clip-dissect and invert."),
    length: int = INVERT_LENGTH,
    beam: int = INVERT_BEAM,
    top_k: int = CLIP_DISSECT_TOP_K,
    fmt: str = FORMAT,
    table: Optional[str] = tables("labels", "counts", "parent_counts", "unexpected"),
) -> None:
    """Label every unit with its best-aligned concept (or none), count units per concept/parent and layer."""
    if method == "semanticlens" and concepts not in PROBE_CONCEPTS:
        if concepts is None:
            from unitlens.cli.common import fail

            fail("semanticlens labels need --concepts (a text file, a folder of concept folders, or probe / "
                 "probe-images for a probe set's concepts)")
        semanticlens_label(atlas, Path(concepts), parents, threshold, layers, backend, show_units, image_null,
                           text_null)
        return
    probe_label(atlas, concepts or "probe", method, threshold, layers, backend, show_units, probe, length, beam,
                top_k)


def semanticlens_label(atlas: Path, concepts: Path, parents: Optional[Path], threshold: float,
                       layers: Optional[str], backend: Optional[str], show_units: int, image_null: str,
                       text_null: str) -> None:
    """Today's SemanticLens labels (the default of ``lens label``)."""
    from unitlens.lens.analysis import label

    with failing_cleanly():
        res = label(atlas, concepts, backend=backend, threshold=threshold, parents=parents,
                    layers=split_list(layers), image_null=image_null, text_null=text_null, progress=True)
    labelled = res.frame[res.frame["label"] != "none"].sort_values("a", ascending=False)
    if show_units:
        print_frame(labelled.head(show_units), title=f"best aligned units (of {len(labelled)} labelled)",
                    name="labels", full=res.frame)
    print_frame(res.counts, title=f"units per concept and layer ({len(res.concepts)} concepts, "
                                  f"threshold {threshold:g})", name="counts")
    if res.parent_counts is not None:
        print_frame(res.parent_counts, title="units per parent and layer", name="parent_counts")
    shown = res.unexpected.sort_values("a").head(show_units or 20)
    print_frame(shown, title=f"unexpected: {len(res.unexpected)} units align with no concept"
                             + (f" (showing {len(shown)})" if len(shown) < len(res.unexpected) else ""),
                name="unexpected", full=res.unexpected.sort_values("a"))
    if res.n_constant:
        say(f"{res.n_constant} constant units were not labelled")
    if res.path:
        say(f"wrote {res.path}")


def labeller_params(method: str, threshold: float, length: int, beam: int, top_k: int) -> dict:
    """The options of one labeller, from the command's flags."""
    params: dict[str, dict] = {"semanticlens": {"threshold": threshold}, "clip-dissect": {"top_k": top_k},
                               "invert": {"length": length, "beam": beam}}
    return params.get(method, {})


def probe_label(atlas: Path, concepts: str, method: str, threshold: float, layers: Optional[str],
                backend: Optional[str], show_units: int, probe: str, length: int, beam: int, top_k: int) -> None:
    """Labels from a probe set (any method), stored with the probe set."""
    from unitlens.probe.labellers import label_units
    from unitlens.probe.store import ProbeStore

    with failing_cleanly():
        frame = label_units(atlas, method, concepts, probe=probe, layers=split_list(layers), backend=backend,
                            progress=True, **labeller_params(method, threshold, length, beam, top_k))
        path = ProbeStore.open(atlas, probe).path / "labels" / f"{method}.parquet"
    labelled = frame[frame["label"] != "none"].sort_values("score", ascending=False)
    if show_units:
        print_frame(labelled.drop(columns="formula").head(show_units),
                    title=f"{method}: best scored units (of {len(labelled)} labelled of {len(frame)})",
                    name="labels", full=frame)
    counts = labelled.groupby(["layer", "label"], sort=False).size().rename("units").reset_index()
    counts = counts.sort_values(["layer", "units", "label"], ascending=[True, False, True], kind="stable")
    print_frame(counts.head(60), title=f"units per label and layer ({method}"
                                       + (", first 60 rows)" if len(counts) > 60 else ")"), name="counts", full=counts)
    if show_units and labelled["score"].head(show_units).isna().any():
        note(f"{method} gives its labels no score (the chance baseline): the score column is missing (nan)")
    say(f"wrote {path}")


@app.command("evaluate-labels")
def evaluate_labels_command(
    atlas: Path = typer.Argument(..., help="Atlas with a probe set (unitlens probe) and, for semanticlens, an "
                                           "embedding (unitlens lens embed)."),
    method: str = typer.Option(",".join((*METHODS, BASELINE)), help="Comma-separated methods to compare "
                                                                      "(random: a chance baseline)."),
    concepts: str = typer.Option("probe", help="probe (the probe set's concept names as text), probe-images (its "
                                               "images per concept), or a text file / concept folder."),
    probe: str = typer.Option(PROBE_NAME, help="Probe set (from unitlens probe)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers/globs (default: all probed)."),
    backend: Optional[str] = typer.Option(None, help="Embedding backend of semanticlens and clip-dissect."),
    holdout: float = typer.Option(HOLDOUT, help="Share of the probe images held out to judge the labels."),
    seed: int = typer.Option(SPLIT_SEED, help="Seed of the held-out split (and the random baseline)."),
    threshold: float = typer.Option(LABEL_THRESHOLD, help="semanticlens: alignment below this gives none."),
    length: int = INVERT_LENGTH,
    beam: int = INVERT_BEAM,
    top_k: int = CLIP_DISSECT_TOP_K,
    figure: bool = typer.Option(True, help="Draw the faithfulness figure."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("faithfulness", "agreement"),
) -> None:
    """Held-out faithfulness of each method's labels: AUC and mean activation difference on probe images not used
    to pick them, per method and layer, and how often methods agree."""
    from unitlens.probe.faithfulness import evaluate_labels

    methods = split_list(method) or []
    params = {m: labeller_params(m, threshold, length, beam, top_k) for m in methods}
    params["random"] = {"seed": seed}
    with failing_cleanly():
        res = evaluate_labels(atlas, methods, probe=probe, concepts=concepts, layers=split_list(layers),
                              backend=backend, holdout=holdout, seed=seed, params=params, figure=figure,
                              progress=True)
    split = res.split
    judged = (f"labels judged on {split['n_heldout']} held-out probe images ({split['n_labelling']} picked them, "
              f"seed {seed})")
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
