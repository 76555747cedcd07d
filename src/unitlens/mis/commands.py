"""``unitlens mis …`` and ``unitlens plot mis …`` commands.

``mis_app`` is a typer group with sub-commands ``score``, ``calibrate`` and ``ceiling``. A first argument that
is not a sub-command name is routed to ``score``, so these two are the same::

    unitlens mis atlas/lite0-demo --backend offline
    unitlens mis score atlas/lite0-demo --backend offline

(An atlas folder literally called ``score``, ``calibrate`` or ``ceiling`` needs the explicit ``score``, or a
path such as ``./calibrate``.) ``plot_mis_command`` is the ``unitlens plot mis ATLAS --out DIR`` command, to be
registered on the ``plot`` group of the main CLI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from unitlens.report.console import console, fail, print_frame, split_list



class DefaultCommandGroup(TyperGroup):
    """A group that sends a first argument that is neither a sub-command nor an option to ``default_command``."""

    default_command = "score"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


mis_app = typer.Typer(
    cls=DefaultCommandGroup, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Machine Interpretability Score of every unit of an atlas. "
         "'unitlens mis ATLAS --backend NAME' is short for 'unitlens mis score ATLAS --backend NAME'.",
)


_SHORT = {"mis_mean": "MIS mean", "mis_p5": "MIS p5", "mis_p95": "MIS p95", "accuracy_mean": "acc mean",
          "constant": "const", "nonfinite": "nonfin"}
_ERRORS = (ValueError, RuntimeError, KeyError, FileNotFoundError, ImportError)


@mis_app.command("score")
def score_command(
    atlas: Path = typer.Argument(..., help="Atlas folder (from unitlens record)."),
    backend: str = typer.Option("offline", help="Embedding backend (offline, dreamsim, openclip:..., ...)."),
    n_tasks: int = typer.Option(20, help="Tasks per unit, N."),
    k_expl: int = typer.Option(9, help="Explanations per side and task, K."),
    tau: float = typer.Option(0.16, help="Temperature: p = sigmoid((Δ⁺ − Δ⁻) / tau)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layer names or globs (default: all)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ... (default: cuda when present)."),
    write: bool = typer.Option(True, help="Write the scores to the atlas's scores.parquet."),
    show_layers: bool = typer.Option(True, help="Print the per-layer table."),
) -> None:
    """Score every unit: embed the exemplars once (cached), build N tasks per unit, one pass per layer."""
    import pandas as pd

    from unitlens.mis.score import STATUS_NONFINITE, run_atlas

    try:
        run = run_atlas(atlas, backend, n_tasks=n_tasks, k_expl=k_expl, tau=tau, layers=split_list(layers),
                        device=device, write=write, progress=True)
    except _ERRORS as err:
        fail(err)
    c, s = run.counts, run.seconds
    print_frame(pd.DataFrame([{
        "images embedded": run.n_images, "cache hits": run.cache_hits, "newly embedded": run.cache_misses,
        "units": c["units"], "scored": c["scored"], "constant (excluded)": c["constant"],
        "non-finite (excluded)": c["nonfinite"]}]), title=f"MIS of {atlas} with backend {run.backend}")
    print_frame(pd.DataFrame([{**{f"{k} (s)": v for k, v in s.items()}, "total (s)": sum(s.values()),
                               "units/s (score)": round(c["scored"] / s["score"]) if s["score"] > 0 else 0}]),
                title="time per stage")
    bad = run.frame[run.frame["status"] == STATUS_NONFINITE]
    if len(bad):
        shown = bad[["layer", "unit"]].head(30)
        print_frame(shown, title=f"{len(bad)} units with non-finite activations, not scored"
                                 + (" (first 30)" if len(bad) > 30 else ""))
    tables = {k: v.rename(columns=_SHORT) for k, v in run.summary().items()}
    if show_layers:
        print_frame(tables["layer"].drop(columns=["rel_depth", "rel_width"]), title="by layer")
    print_frame(tables["type"], title="by layer type")
    print_frame(tables["model"], title=f"model (n_tasks={n_tasks}, k={k_expl}, tau={tau:g})")
    if write:
        console.print(f"wrote metrics mis and mis_accuracy (backend {run.backend}) to {Path(atlas) / 'scores.parquet'}")


def _read_human(path: Path):
    import pandas as pd

    human = pd.read_csv(path)
    missing = {"layer", "unit", "score"} - set(human.columns)
    if missing:
        raise ValueError(f"{path} needs columns layer, unit, score (and optionally n_trials); "
                         f"missing {sorted(missing)}")
    return human


@mis_app.command("calibrate")
def calibrate_command(
    atlas: Path = typer.Argument(..., help="Atlas folder whose units the human scores refer to."),
    human: Path = typer.Option(..., help="CSV with columns layer, unit, score (0..1) and optionally n_trials."),
    backend: str = typer.Option("offline", help="Embedding backend."),
    n_tasks: int = typer.Option(20, help="Tasks per unit, N."),
    k_expl: int = typer.Option(9, help="Explanations per side and task, K."),
    fraction: float = typer.Option(0.05, help="Fraction of the human-scored units tau is fitted on."),
    seed: int = typer.Option(0, help="Seed of the random fit/evaluation split and of the simulation."),
    n_trials: Optional[int] = typer.Option(None, help="Human decisions per unit for the noise ceiling "
                                                       "(default: the CSV's n_trials column, if any)."),
    n_sim: int = typer.Option(1000, help="Simulations for the noise ceiling."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ..."),
) -> None:
    """Fit tau to human per-unit scores on a small fraction of units; correlations on the rest."""
    import pandas as pd

    from unitlens.mis.calibrate import fit_tau, noise_ceiling
    from unitlens.mis.score import margins_frame, run_atlas

    try:
        scores = _read_human(human)
        run = run_atlas(atlas, backend, n_tasks=n_tasks, k_expl=k_expl, layers=sorted(scores["layer"].unique()),
                        device=device, write=False, progress=True, keep_margins=True)
        fit = fit_tau(margins_frame(run), scores, fraction=fraction, seed=seed)
    except _ERRORS as err:
        fail(err)
    print_frame(pd.DataFrame([fit.as_dict()]), title=f"tau fitted on {fit.n_fit} units, evaluated on {fit.n_eval}")
    trials = n_trials if n_trials is not None else ("n_trials" if "n_trials" in scores else None)
    if trials is not None:
        try:
            ceiling = noise_ceiling(scores, trials, n_sim=n_sim, seed=seed)
        except _ERRORS as err:
            fail(err)
        print_frame(pd.DataFrame([ceiling.as_dict()]), title="noise ceiling of the human scores (appendix B)")
    console.print(f"score with: unitlens mis {atlas} --backend {backend} --tau {fit.tau:.4g}")


@mis_app.command("ceiling")
def ceiling_command(
    human: Path = typer.Option(..., help="CSV with a score column (0..1) and optionally n_trials."),
    n_trials: Optional[int] = typer.Option(None, help="Decisions per unit (default: the CSV's n_trials column)."),
    n_sim: int = typer.Option(1000, help="Simulations."),
    seed: int = typer.Option(0, help="Seed."),
) -> None:
    """Noise ceiling of per-unit human scores (paper appendix B)."""
    import pandas as pd

    from unitlens.mis.calibrate import noise_ceiling

    try:
        scores = pd.read_csv(human)
        trials = n_trials if n_trials is not None else "n_trials"
        if trials == "n_trials" and "n_trials" not in scores:
            raise ValueError(f"{human} has no n_trials column; pass --n-trials")
        ceiling = noise_ceiling(scores, trials, n_sim=n_sim, seed=seed)
    except _ERRORS as err:
        fail(err)
    print_frame(pd.DataFrame([ceiling.as_dict()]), title="noise ceiling (appendix B)")


def plot_mis_command(
    atlas: Path = typer.Argument(..., help="Atlas folder with MIS scores (unitlens mis ATLAS)."),
    out: Path = typer.Option(..., help="Folder to write the PNG files to."),
    backend: Optional[str] = typer.Option(None, help="Which backend's scores (needed when there are several)."),
) -> None:
    """Plot MIS: per-unit histogram, layers by depth (coloured by type), mean MIS vs relative depth and width."""
    from unitlens.atlas import Atlas, AtlasError
    from unitlens.mis.score import load_scores
    from unitlens.report.mis_plots import plot_mis

    try:
        a = Atlas(atlas)
        frame = load_scores(a, backend)
        paths = plot_mis(frame, out, title=str(a.manifest.get("config", {}).get("model", atlas)))
    except (*_ERRORS, AtlasError) as err:
        fail(err)
    for p in paths:
        console.print(str(p))
