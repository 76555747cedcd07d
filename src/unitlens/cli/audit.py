"""``unitlens audit …`` commands (``audit_app``)::

    unitlens audit ATLAS --class C --valid CONCEPTS --spurious CONCEPTS [--min-relevance 0.028] [--out DIR]
    unitlens audit test [ATLAS | --model M] --class C --valid-images DIR --spurious-images DIR
    unitlens audit prune [ATLAS | --model M] --class C (--units LAYER:U,U | --from-audit [--verdict spurious])
                         [--ablate zero|mean] [--labelled DIR] [--spurious-images DIR]

CONCEPTS is a text file (one concept per line; needs a backend with a text encoder) or a folder of concept image
folders. ``unitlens audit ATLAS …`` is short for ``unitlens audit alignment ATLAS …`` (an atlas folder literally
called ``alignment``, ``test`` or ``prune`` needs the explicit ``alignment``, or a path such as ``./test``). Their
options are generated from ``AuditOptions``, ``AuditTestOptions``, ``PruneOptions`` and ``ModelOptions``
(``cli.options``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unitlens.audit.options import AuditOptions, AuditTestOptions, PruneOptions
from unitlens.cli.common import (
    FORMAT,
    failing_cleanly,
    group,
    inputs,
    load_named_model,
    note,
    print_frame,
    say,
    short_names,
    split_list,
    tables,
    warn,
)
from unitlens.cli.options import options_command
from unitlens.errors import AuditError, BadInput, UnitlensError
from unitlens.zoo.options import ModelOptions

app = group("audit", default="alignment",
            help="Audit a class: are the units it relies on aligned with valid or spurious concepts (SemanticLens "
                 "paper, 3.4/4.2), does its logit separate valid from spurious images, what does pruning units do. "
                 "'unitlens audit ATLAS ...' is short for 'unitlens audit alignment ATLAS ...'.")
SHOWN = 20  # units listed per table (--format csv / json: every unit)


@app.command("alignment")
@inputs("cls", "valid", "spurious", "backend", "out")
@options_command
def alignment_command(
    atlas: Path = typer.Argument(..., help="Embedded atlas folder (unitlens lens embed) with relevance "
                                           "(unitlens relevance ATLAS --class C)."),
    cls: str = typer.Option(..., "--class", help="Class index or name (e.g. 549 or envelope)."),
    valid: Path = typer.Option(..., help="Valid concepts: text file (one per line) or folder of concept folders."),
    spurious: Path = typer.Option(..., help="Spurious concepts: text file or folder of concept image folders."),
    backend: Optional[str] = typer.Option(None, help="Which lens embedding (needed when the atlas has several)."),
    out: Optional[Path] = typer.Option(None, help="Folder for the figures (default: ATLAS/audit)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("units", "verdicts", "flagged"),
    *,
    options: AuditOptions,
) -> None:
    """Verdict per relevant unit: valid, spurious, both or unexpected, from a_valid and a_spur; the scatter and a
    sheet of the flagged units as figures."""
    from unitlens.atlas import Atlas
    from unitlens.audit import audit_class, plot_audit, plot_flagged_units
    from unitlens.audit.alignment import audit_basename

    with failing_cleanly():
        res = audit_class(atlas, cls, valid, spurious, options, backend=backend)
        paths = []
        if not res.frame.empty:
            stem = (out or Atlas(atlas).derived_path("audit")) / audit_basename(res.class_index, res.class_name)
            scatter, sheet = Path(f"{stem}_scatter.png"), Path(f"{stem}_flagged.png")
            plot_audit(res, scatter)
            paths = [scatter] + ([sheet] if plot_flagged_units(res, sheet) is not None else [])
    frame = res.frame
    several = frame["layer"].nunique() > 1
    cols = (["layer"] if several else []) + ["unit", "relevance", "a_valid", "valid_concept", "a_spur",
                                             "spurious_concept", "verdict", "leans"]
    layers_text = ", ".join(dict.fromkeys(res.summary["layer"]))
    print_frame(frame[cols].head(SHOWN), title=f"{len(frame)} units of {layers_text} relevant for class "
                     f"{res.class_index} '{res.class_name}' ({res.stat} relevance ≥ {res.min_relevance:g}; "
                     f"{res.backend})" + (f", showing {SHOWN}" if len(frame) > SHOWN else ""), name="units",
                full=frame)
    print_frame(res.summary, title="units per verdict; rel_share: the mean share of the layer's relevance "
                                   "they carry", name="verdicts")
    flagged = res.flagged
    if len(flagged):
        shown = flagged.head(SHOWN)
        table = shown[(["layer"] if several else []) + ["unit", "verdict", "relevance"]].assign(
            exemplars=[short_names(p) for p in shown["exemplars"]],
            other_classes=[o if isinstance(o, str) else "?" for o in shown["other_classes"]])
        print_frame(table, title=f"{len(flagged)} spurious or unexpected units: top concept examples and the "
                                 "other classes they are relevant for", name="flagged", full=flagged)
    for message in res.notes:
        note(message)
    if res.path:
        say(f"wrote {res.path} (and .csv, .json)")
    for p in paths:
        say(f"figure: {p}")


def _model(atlas: Optional[Path], model: ModelOptions):
    """The model to test: ``--model`` (with ``--checkpoint``/``--num-classes``/``--random``), else the atlas's."""
    from unitlens.atlas import Atlas

    if model.model:
        return load_named_model(model)
    if atlas is None:
        raise AuditError("name the model: give an ATLAS (its model is loaded) or --model NAME")
    try:
        return Atlas(atlas).load_model()
    except UnitlensError as err:
        raise AuditError(f"cannot load the model of atlas {atlas} ({err.__cause__ or err}); give it with --model "
                         "NAME [--checkpoint FILE]") from err


@app.command("test")
@options_command
def test_command(
    atlas: Optional[Path] = typer.Argument(None, help="Atlas whose model is tested (or give --model)."),
    cls: str = typer.Option(..., "--class", help="Class index or name."),
    valid_images: Path = typer.Option(..., help="Images of the class (folder, recursive, or .txt/.csv list)."),
    spurious_images: Path = typer.Option(..., help="Images with the spurious features only."),
    fmt: str = FORMAT,
    *,
    model: ModelOptions,
    options: AuditTestOptions,
) -> None:
    """AUC of the class logit separating valid (positives) from spurious (negatives) images (fig. 3a, step 3)."""
    from unitlens.audit.logit_auc import audit_test

    with failing_cleanly():
        loaded = _model(atlas, model)
        res = audit_test(loaded, cls, valid_images, spurious_images, options)
    auc = res.auc
    name = f"{res.class_index} '{res.class_name}'"
    print_frame(res.table, title=f"logit of class {name} ({loaded.name})", name="logits")
    for path in res.skipped:
        warn(f"skipped unreadable image: {path}")
    say(f"AUC = {auc:.4f}: the logit of class {name} separates the valid images from the spurious ones "
           + ("perfectly" if auc == 1 else "not at all" if auc == 0.5 else "partly" if auc > 0.5 else
              "worse than chance: the spurious images score higher")
           + " (1 = perfectly, 0.5 = not at all)")


def _parse_units(specs: list[str]) -> dict[str, list[int]]:
    units: dict[str, list[int]] = {}
    for spec in specs:
        layer, _, rest = spec.rpartition(":")
        try:
            idx = [int(u) for u in rest.split(",") if u.strip()]
        except ValueError:
            idx = []
        if not layer or not idx:
            raise BadInput(f"--units takes LAYER:UNIT[,UNIT...], e.g. blocks.6.0.conv_pwl:12,40; got '{spec}'")
        units.setdefault(layer, []).extend(idx)
    return units


@app.command("prune")
@inputs("cls", "units", "from_audit", "verdict", "labelled", "spurious_images")
@options_command
def prune_command(
    atlas: Optional[Path] = typer.Argument(None, help="Atlas whose model is pruned (or give --model)."),
    cls: str = typer.Option(..., "--class", help="Class index or name."),
    units: Optional[List[str]] = typer.Option(None, "--units", help="LAYER:UNIT[,UNIT...] to ablate (repeatable)."),
    from_audit: bool = typer.Option(False, "--from-audit", help="Ablate the units of the stored audit of --class."),
    verdict: str = typer.Option("spurious", help="With --from-audit: comma-separated verdicts to ablate."),
    labelled: Optional[Path] = typer.Option(None, help="Folder with one sub-folder of images per class (named "
                                                       "by class index, name, or WordNet id): accuracy."),
    spurious_images: Optional[Path] = typer.Option(None, help="Images with the spurious features only: class "
                                                              "logit and top-5 rate."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("ablated", "effect", "per_class"),
    *,
    model: ModelOptions,
    options: PruneOptions,
) -> None:
    """Zero (or mean-ablate) units and report accuracy and the class logit before and after (paper 4.3)."""
    import pandas as pd

    from unitlens.audit import audited_units, prune_check
    from unitlens.zoo.classes import resolve_class

    with failing_cleanly():
        chosen = _parse_units(units or [])
        loaded = _model(atlas, model)
        if from_audit:
            if atlas is None:
                raise AuditError("--from-audit reads the stored audit of an atlas: give the ATLAS")
            index = resolve_class(loaded, cls)[0]
            for layer, us in audited_units(atlas, index, split_list(verdict) or []).items():
                chosen.setdefault(layer, []).extend(us)
        if not chosen:
            raise AuditError("no unit to ablate: give --units LAYER:UNIT,... or --from-audit")
        if options.ablate == "mean" and atlas is None:
            raise AuditError("--ablate mean takes each unit's mean activation from an atlas: give the ATLAS")
        res = prune_check(loaded, chosen, cls, options, labelled=labelled, spurious=spurious_images, atlas=atlas)
    n = sum(len(v) for v in res.units.values())
    done = "zeroed" if res.ablate == "zero" else "set to their mean"
    print_frame(pd.DataFrame([{"layer": layer, "units": len(us), "ablated": ",".join(map(str, us))}
                              for layer, us in res.units.items()]), title=f"{n} units {done}", name="ablated")
    print_frame(res.table, title=f"before and after, class {res.class_index} '{res.class_name}'", name="effect")
    if res.per_class is not None and len(res.per_class) > 1:
        print_frame(res.per_class.head(30), title="top-1 accuracy per labelled class", name="per_class",
                    full=res.per_class)
    for message in res.notes:
        note(message)
    for path in res.skipped:
        warn(f"skipped unreadable image: {path}")
