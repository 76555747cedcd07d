"""``unitlens lens …`` commands (``lens_app``) and ``plot_lens_command`` (``unitlens plot lens``).

::

    unitlens lens embed ATLAS --backend offline-vl --m 30 --crop none|activation --layers a,b
    unitlens lens search ATLAS "a text probe"            (needs a backend with a text encoder)
    unitlens lens search ATLAS --image IMG --image DIR   (images, or every image under a folder, averaged)
    unitlens lens label ATLAS --concepts FILE|DIR [--parents FILE] [--threshold 0.025]
    unitlens lens compare ATLAS_A ATLAS_B
    unitlens lens measures ATLAS
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unitlens.lens.store import DEFAULT_LENS_BACKEND
from unitlens.report import console as _out

lens_app = typer.Typer(help="SemanticLens: units as vectors in a foundation model's space; search, label, "
                            "compare, measures.", no_args_is_help=True, pretty_exceptions_enable=False)


def _errors():
    from unitlens.atlas.atlas import AtlasError
    from unitlens.backends.base import BackendUnavailable
    from unitlens.lens.examples import LensError

    return (LensError, AtlasError, BackendUnavailable, ValueError, FileNotFoundError, ImportError, RuntimeError)


@lens_app.command("embed")
def embed_command(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    backend: str = typer.Option(DEFAULT_LENS_BACKEND, help="Embedding backend (offline-vl, offline, openclip:..., "
                                                           "hf:..., timm:...)."),
    m: int = typer.Option(30, "--m", help="Concept examples per unit (most activating samples)."),
    crop: str = typer.Option("none", help="none (whole images), activation (crop to the unit's activation map) "
                                          "or relevance (crop to its CRP relevance heatmap)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs (default: all)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
    batch_size: int = typer.Option(64, help="Images per embedding batch."),
    crop_threshold: float = typer.Option(0.01, help="Activation crops keep pixels >= this fraction of the map's max."),
    force: bool = typer.Option(False, help="Embed again layers already embedded with the same settings."),
) -> None:
    """Embed every unit's concept examples and store θ (mean embedding) and the vector table in the atlas."""
    import pandas as pd

    from unitlens.lens.embed import embed_atlas

    try:
        r = embed_atlas(atlas, backend, m=m, crop=crop, layers=_out.split_list(layers), device=device,
                        batch_size=batch_size, threshold=crop_threshold, force=force, progress=True)
    except _errors() as err:
        _out.fail(err)
    for note in r.notes:
        _out.console.print(f"[yellow]note:[/] {note}")
    if r.embedded:
        rows = [{"layer": n, **{k: r.store.layer_meta(n)[k] for k in ("units", "m", "crop", "n_distinct_examples",
                                                                        "n_cropped", "lancedb")}}
                for n in r.embedded]
        _out.print_frame(pd.DataFrame(rows), title=f"embedded {atlas} with {r.store.backend} -> {r.store.path}")
        s = r.seconds
        _out.print_frame(pd.DataFrame([{"(image, crop) keys": r.n_examples, "cache hits": r.cache_hits,
                                        "newly embedded": r.cache_misses,
                                        **{f"{k} (s)": v for k, v in s.items()}}]), title="work")
    if r.skipped:
        _out.console.print(f"already embedded with the same settings (use --force to redo): {', '.join(r.skipped)}")


@lens_app.command("search")
def search_command(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    text: Optional[str] = typer.Argument(None, help="Text probe (needs a backend with a text encoder)."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="Probe image or folder (repeatable; averaged)."),
    top: int = typer.Option(10, help="Units to show."),
    layer: Optional[str] = typer.Option(None, "--layer", "--layers", help="Comma-separated layers/globs."),
    backend: Optional[str] = typer.Option(None, help="Which embedding (needed when the atlas has several)."),
    null: Optional[str] = typer.Option(None, help="Null vector: template (default) or none for text; none (default) or dataset for images."),
    engine: str = typer.Option("auto", help="auto, exact (in memory) or lancedb (vector table)."),
    exemplars: int = typer.Option(3, help="Exemplar files listed per unit."),
    csv: Optional[Path] = typer.Option(None, help="Also write the full table (with exemplar paths) to this CSV."),
) -> None:
    """Units whose θ is most aligned with a text or image probe: a = cos(θ, probe) − cos(θ, null)."""
    import pandas as pd

    from unitlens.lens.analysis import search

    try:
        res = search(atlas, text=text, images=image or None, backend=backend, layers=_out.split_list(layer),
                     top=top, engine=engine, null=null, n_exemplars=max(exemplars, 1), progress=True)
    except _errors() as err:
        _out.fail(err)
    frame = res.frame
    shown = frame.drop(columns=["exemplars"]).assign(
        exemplars=[_out.short_names(p, exemplars) for p in frame["exemplars"]])
    what = f"'{res.probe.name}'" if res.probe.kind == "text" else f"{res.probe.n_inputs} image(s)"
    _out.print_frame(shown, title=f"search {what} in {atlas} ({res.backend}, {res.engine}, null "
                                  f"{'subtracted' if res.probe.null is not None else 'none'})")
    if frame.shape[0]:
        _out.console.print(f"top unit's exemplars: {', '.join(frame['exemplars'].iloc[0])}")
    if csv is not None:
        out = frame.assign(exemplars=[";".join(p) for p in frame["exemplars"]])
        csv.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(out).to_csv(csv, index=False)
        _out.console.print(f"wrote {csv}")


@lens_app.command("label")
def label_command(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    concepts: Path = typer.Option(..., help="Text file (one concept per line) or folder of concept image folders."),
    parents: Optional[Path] = typer.Option(None, help="YAML/JSON concept -> parent mapping (dissection counts)."),
    threshold: float = typer.Option(0.025, help="Units whose best alignment is below this get 'none'."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers/globs (default: all embedded)."),
    backend: Optional[str] = typer.Option(None, help="Which embedding (needed when the atlas has several)."),
    show_units: int = typer.Option(20, help="Labelled units to list (best aligned first)."),
    image_null: str = typer.Option("dataset", help="Null for image-folder concepts: dataset or none."),
    text_null: str = typer.Option("template", help="Null for text concepts: template or none."),
) -> None:
    """Label every unit with its best-aligned concept (or none), count units per concept/parent and layer."""
    from unitlens.lens.analysis import label

    try:
        res = label(atlas, concepts, backend=backend, threshold=threshold, parents=parents,
                    layers=_out.split_list(layers), image_null=image_null, text_null=text_null, progress=True)
    except _errors() as err:
        _out.fail(err)
    labelled = res.frame[res.frame["label"] != "none"].sort_values("a", ascending=False)
    if show_units:
        _out.print_frame(labelled.head(show_units), title=f"best aligned units (of {len(labelled)} labelled)")
    _out.print_frame(res.counts, title=f"units per concept and layer ({len(res.concepts)} concepts, "
                                       f"threshold {threshold:g})")
    if res.parent_counts is not None:
        _out.print_frame(res.parent_counts, title="units per parent and layer")
    shown = res.unexpected.sort_values("a").head(show_units or 20)
    _out.print_frame(shown, title=f"unexpected: {len(res.unexpected)} units align with no concept"
                                  + (f" (showing {len(shown)})" if len(shown) < len(res.unexpected) else ""))
    if res.n_constant:
        _out.console.print(f"{res.n_constant} constant units were not labelled")
    if res.path:
        _out.console.print(f"wrote {res.path}")


@lens_app.command("compare")
def compare_command(
    atlas_a: Path = typer.Argument(..., help="Embedded atlas A."),
    atlas_b: Path = typer.Argument(..., help="Embedded atlas B (same backend)."),
    backend: Optional[str] = typer.Option(None, help="Backend both were embedded with (when several)."),
    layers_a: Optional[str] = typer.Option(None, help="Layers of A (comma-separated/globs)."),
    layers_b: Optional[str] = typer.Option(None, help="Layers of B (comma-separated/globs)."),
    threshold: float = typer.Option(0.9, help="Units of A whose best cosine to B is below this have no counterpart "
                                                  "(backend-dependent; the paper gives no value)."),
    show_units: int = typer.Option(20, help="Unmatched units to list."),
) -> None:
    """S(A→B) = mean over units of A of the max cosine to a unit of B, per layer pair; unmatched units of A."""
    from unitlens.lens.analysis import compare

    try:
        res = compare(atlas_a, atlas_b, backend=backend, layers_a=_out.split_list(layers_a),
                      layers_b=_out.split_list(layers_b), threshold=threshold)
    except _errors() as err:
        _out.fail(err)
    _out.print_frame(res.matrix.reset_index(names="A \\ B"), title=f"S(A→B), A = {atlas_a}, B = {atlas_b} "
                                                                  f"({res.backend})")
    _out.print_frame(res.unmatched.head(show_units),
                     title=f"{len(res.unmatched)} of {len(res.best)} units of A have no counterpart in B "
                           f"(max cos < {threshold:g})")


@lens_app.command("measures")
def measures_command(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    backend: Optional[str] = typer.Option(None, help="Which embedding (needed when the atlas has several)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers/globs (default: all embedded)."),
    write: bool = typer.Option(True, help="Write the scores to scores.parquet."),
    seed: int = typer.Option(0, help="Seed of the 2-means restarts (polysemanticity)."),
) -> None:
    """Clarity, polysemanticity and max similarity per unit, redundancy per layer (paper section 3.5)."""
    from unitlens.lens.analysis import measures

    try:
        res = measures(atlas, backend=backend, layers=_out.split_list(layers), write=write, seed=seed)
    except _errors() as err:
        _out.fail(err)
    _out.print_frame(res.layers, title=f"interpretability measures of {atlas} ({res.backend})")
    if write:
        _out.console.print(f"wrote metrics clarity, polysemanticity, max_similarity (backend {res.backend}) to "
               f"{Path(atlas) / 'scores.parquet'}; per-layer redundancy to lens/…/measures.parquet")


def plot_lens_command(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder."),
    out: Path = typer.Option(..., help="Folder to write the PNG files to."),
    layer: Optional[str] = typer.Option(None, help="Layer to map (default: the last embedded layer)."),
    backend: Optional[str] = typer.Option(None, help="Which embedding (needed when the atlas has several)."),
    color: str = typer.Option("label", help="label (from unitlens lens label) or probe (needs --text/--image)."),
    text: Optional[str] = typer.Option(None, help="Text probe to colour by."),
    image: Optional[List[Path]] = typer.Option(None, "--image", help="Probe image/folder to colour by (repeatable)."),
    projection: str = typer.Option("umap", help="umap or pca."),
    cards: int = typer.Option(8, help="Unit cards to draw: the units best aligned with the probe, else the "
                                      "best-aligned labelled units, else the first units."),
    units: Optional[str] = typer.Option(None, help="Comma-separated unit indices for cards (overrides --cards)."),
    exemplars: int = typer.Option(8, help="Exemplars per unit card."),
) -> None:
    """Map of θ for a layer (UMAP/PCA, coloured by label or probe alignment) and unit cards, as PNGs."""
    from unitlens.report.lens_plots import plot_lens

    try:
        paths = plot_lens(atlas, out, layer=layer, backend=backend, color=color, text=text, images=image or None,
                          projection=projection, n_cards=cards,
                          units=[int(u) for u in _out.split_list(units)] if units else None, n_exemplars=exemplars)
    except _errors() as err:
        _out.fail(err)
    for p in paths:
        _out.console.print(str(p))
