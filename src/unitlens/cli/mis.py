"""``unitlens mis …``: sub-commands ``score``, ``calibrate`` and ``ceiling``.

A first argument that is not a sub-command name is routed to ``score``, so these two are the same::

    unitlens mis atlas/lite0-demo --backend offline
    unitlens mis score atlas/lite0-demo --backend offline

(An atlas folder literally called ``score``, ``calibrate`` or ``ceiling`` needs the explicit ``score``, or a
path such as ``./calibrate``.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unitlens.cli.common import (
    FORMAT,
    fail,
    failing_cleanly,
    group,
    note,
    print_frame,
    resumable,
    say,
    tables,
)
from unitlens.cli.options import options_command
from unitlens.errors import BadInput
from unitlens.mis.options import CalibrationOptions, MISOptions

app = group("mis", default="score",
            help="Machine Interpretability Score of every unit of an atlas. "
                 "'unitlens mis ATLAS --backend NAME' is short for 'unitlens mis score ATLAS --backend NAME'.")

_SHORT = {"mis_mean": "MIS mean", "mis_p5": "MIS p5", "mis_p95": "MIS p95", "accuracy_mean": "acc mean",
          "constant": "const", "nonfinite": "nonfin"}
_KEY = ("MIS mean", "MIS p5", "MIS p95")  # the columns the MIS tables exist for: kept in 80 columns


@app.command("score")
@options_command
def score_command(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("run", "time", "nonfinite", "by_layer", "by_type", "model", "featviz", "comparison"),
    *,
    options: MISOptions,
) -> None:
    """Score every unit: embed the exemplars once (cached), build N tasks per unit, one pass per layer."""
    import warnings

    if options.explanations == "featviz":
        _score_featviz(atlas, options)
        return

    import pandas as pd

    from unitlens.errors import BiasWarning
    from unitlens.mis.scoring import STATUS_NONFINITE, STATUS_SCORED, score_mis

    with failing_cleanly(), resumable("the embeddings made so far are cached in the atlas"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasWarning)  # said below, with the overlap
        run = score_mis(atlas, options)
    c, s = run.counts, run.seconds
    n_tasks, k_expl = options.n_tasks, options.k_expl
    need = n_tasks * (k_expl + 1)
    work = ({"images": run.n_images, "matrix rows read back": run.cache_hits, "pairs compared": run.pairs}
            if run.pairwise else
            {"images embedded": run.n_images, "cache hits": run.cache_hits, "newly embedded": run.cache_misses})
    print_frame(pd.DataFrame([{
        **work, "units": c["units"], "scored": c["scored"], "constant (excluded)": c["constant"],
        "non-finite (excluded)": c["nonfinite"], f"top/bottom overlap (of {need})": run.overlap}]),
        title=f"MIS of {atlas} with backend {run.backend}", name="run")
    if run.overlap:
        note(f"each unit's {need} most and {need} least activating images share {run.overlap} images (the dataset "
             f"holds fewer than 2·N·(K+1) = {2 * need}): these scores are biased (shared images pull MIS and accuracy "
             "towards and below chance); use more images or lower --n-tasks / --k-expl")
    print_frame(pd.DataFrame([{**{f"{k} (s)": v for k, v in s.items()}, "total (s)": sum(s.values()),
                               "units/s (score)": round(c["scored"] / s["score"]) if s["score"] > 0 else 0}]),
                title="time per stage", name="time")
    if "bottom_tied" in run.frame:
        scored = run.frame[run.frame["status"] == STATUS_SCORED]
        tied = scored[(scored["top_tied"] > 0) | (scored["bottom_tied"] > 0)]
        if len(tied):
            whole = int(((scored["top_tied"] >= need) | (scored["bottom_tied"] >= need)).sum())
            note(f"{len(tied)} of {len(scored)} scored units have task exemplars tied at one activation value, "
                 f"{whole} of them all {need} of a side (dead units): the seeded tie-break chose which samples "
                 "(units.parquet: top_tied, bottom_tied)")
    bad = run.frame[run.frame["status"] == STATUS_NONFINITE]
    if len(bad):
        shown = bad[["layer", "unit"]].head(30)
        print_frame(shown, title=f"{len(bad)} units with non-finite activations, not scored"
                                 + (" (first 30)" if len(bad) > 30 else ""), name="nonfinite",
                    full=bad[["layer", "unit"]])
    summary = run.summary()
    shown = {k: v.rename(columns=_SHORT) for k, v in summary.items()}
    print_frame(shown["layer"].drop(columns=["rel_depth", "rel_width"]), title="by layer", name="by_layer",
                full=summary["layer"], key=_KEY)
    print_frame(shown["type"], title="by layer type", name="by_type", full=summary["type"], key=_KEY)
    overlap = f", top/bottom overlap {run.overlap} of {need}: biased" if run.overlap else ""
    print_frame(shown["model"], title=f"model (n_tasks={n_tasks}, k={k_expl}, tau={options.tau:g}{overlap})",
                name="model", full=summary["model"], key=_KEY)
    if options.write:
        say(f"wrote metrics mis and mis_accuracy (backend {run.backend}) to {Path(atlas) / 'scores.parquet'}")


def _score_featviz(atlas: Path, options: MISOptions) -> None:
    """``mis --explanations featviz``: MIS of the stored feature visualisations, and its comparison with the
    natural-exemplar MIS of the same units."""
    import warnings

    import pandas as pd

    from unitlens.errors import BiasWarning, NotComputed, UnitlensError
    from unitlens.featviz.compare import compare_explanations
    from unitlens.featviz.scoring import score_featviz
    from unitlens.mis.scoring import STATUS_SCORED

    with failing_cleanly(), resumable("the visualisations' embeddings made so far are kept in the atlas"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasWarning)
        run = score_featviz(atlas, options)
    frame = run.frame
    rows = []
    for layer, g in frame.groupby("layer", sort=False):
        scored = g[g["status"] == STATUS_SCORED]
        rows.append({"layer": layer, "units": len(g), "scored": len(scored),
                     "MIS featviz": float(scored["mis_featviz"].mean()) if len(scored) else float("nan"),
                     "acc featviz": float(scored["mis_featviz_accuracy"].mean()) if len(scored) else float("nan"),
                     "steps": int(g["steps"].iloc[0]), "size": int(g["size"].iloc[0])})
    print_frame(pd.DataFrame(rows), title=f"MIS of feature visualisations of {atlas} with backend {run.backend} "
                                          f"(n_tasks={options.n_tasks}, k={options.k_expl}, tau={options.tau:g}; "
                                          f"{run.images_embedded} images embedded now)", name="featviz")
    if run.params.get("overlap"):
        note(f"the queries' top and bottom exemplars share {run.params['overlap']} images: biased scores")
    if options.write:
        say(f"wrote metrics mis_featviz and mis_featviz_accuracy (backend {run.backend}) to "
            f"{Path(atlas) / 'scores.parquet'}")
        try:
            comparison = compare_explanations(atlas, run.backend, sorted(set(frame["layer"])))
        except NotComputed as err:  # no natural-exemplar MIS of this backend yet
            note(f"no comparison: {err}")
            return
        except UnitlensError as err:
            fail(err)
        table = comparison.layers.rename(columns={"mis_exemplars": "MIS exemplars", "mis_featviz": "MIS featviz",
                                                  "difference": "featviz − exemplars", "featviz_better": "featviz "
                                                  "better", "wilcoxon_p": "Wilcoxon p"}).drop(columns="depth")
        print_frame(table, title="natural exemplars vs feature visualisations as explanations (per layer: mean MIS, "
                                 "mean paired difference, share of units better with visualisations)",
                    name="comparison", full=comparison.layers)
        say(f"figures: unitlens plot featviz {atlas} --out {Path(atlas) / 'figures'}")


def _read_csv(path: Path):
    import pandas as pd

    from unitlens.errors import MissingFile

    if not path.is_file():
        raise MissingFile(f"{path} does not exist")
    try:
        return pd.read_csv(path)
    except Exception as err:  # a parser error of any kind: name the file
        raise BadInput(f"cannot read {path} as CSV: {err}") from err


def _read_human(path: Path):
    human = _read_csv(path)
    missing = {"layer", "unit", "score"} - set(human.columns)
    if missing:
        raise BadInput(f"{path} needs columns layer, unit, score (and optionally n_trials); "
                         f"missing {sorted(missing)}")
    return human


@app.command("calibrate")
@options_command(only={"mis": ("backend", "n_tasks", "k_expl", "device")})
def calibrate_command(
    atlas: Path = typer.Argument(..., help="Atlas folder whose units the human scores refer to."),
    human: Path = typer.Option(..., help="CSV with columns layer, unit, score (0..1) and optionally n_trials."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("fit", "ceiling"),
    *,
    mis: MISOptions,
    calibration: CalibrationOptions,
) -> None:
    """Fit tau to human per-unit scores on a small fraction of units; correlations on the rest."""
    import pandas as pd

    from unitlens.mis.calibrate import fit_tau, noise_ceiling
    from unitlens.mis.scoring import margins_frame, score_mis

    with failing_cleanly():
        scores = _read_human(human)
        run = score_mis(atlas, mis.replace(layers=sorted(scores["layer"].unique()), write=False),
                        keep_margins=True)
        fit = fit_tau(margins_frame(run), scores, fraction=calibration.fraction, seed=calibration.seed)
    print_frame(pd.DataFrame([fit.as_dict()]), title=f"tau fitted on {fit.n_fit} units, evaluated on {fit.n_eval}",
                name="fit")
    trials = calibration.n_trials if calibration.n_trials is not None else \
        ("n_trials" if "n_trials" in scores else None)
    if trials is not None:
        with failing_cleanly():
            ceiling = noise_ceiling(scores, trials, n_sim=calibration.n_sim, seed=calibration.seed)
        print_frame(pd.DataFrame([ceiling.as_dict()]), title="noise ceiling of the human scores (appendix B)",
                    name="ceiling")
    say(f"score with: unitlens mis {atlas} --backend {run.backend} --tau {fit.tau:.4g}")


@app.command("ceiling")
@options_command(only={"calibration": ("n_trials", "n_sim", "seed")})
def ceiling_command(
    human: Path = typer.Option(..., help="CSV with a score column (0..1) and optionally n_trials."),
    fmt: str = FORMAT,
    *,
    calibration: CalibrationOptions,
) -> None:
    """Noise ceiling of per-unit human scores (paper appendix B)."""
    import pandas as pd

    from unitlens.mis.calibrate import noise_ceiling

    with failing_cleanly():
        scores = _read_csv(human)
        trials = calibration.n_trials if calibration.n_trials is not None else "n_trials"
        if trials == "n_trials" and "n_trials" not in scores:
            raise BadInput(f"{human} has no n_trials column; pass --n-trials")
        ceiling = noise_ceiling(scores, trials, n_sim=calibration.n_sim, seed=calibration.seed)
    print_frame(pd.DataFrame([ceiling.as_dict()]), title="noise ceiling (appendix B)", name="ceiling")
