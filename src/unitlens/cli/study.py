"""``unitlens study …``: ``run`` a study file, print and write its ``summary``, ``query`` it with SQL."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from unitlens.cli.common import (
    FORMAT,
    error,
    fail,
    failing_cleanly,
    machine_readable,
    note,
    print_frame,
    resumable,
    say,
    tables,
)
from unitlens.cli.options import options_command
from unitlens.study.options import StudyPlanOptions, StudyRunOptions

LOCAL_RAY = "local"


class StudyGroup(TyperGroup):
    """``--ray`` takes an optional address: alone (followed by an option, the study file or nothing) it means a
    local Ray instance."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        out = []
        for i, arg in enumerate(args):
            out.append(arg)
            nxt = args[i + 1] if i + 1 < len(args) else None
            if arg == "--ray" and (nxt is None or nxt.startswith("-") or nxt.endswith(".toml")):
                out.append(LOCAL_RAY)
        return super().parse_args(ctx, out)


app = typer.Typer(cls=StudyGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Studies: many models or checkpoints recorded, scored and compared together.")

PANELS = {  # the study table in panels that each fit 80 columns: column -> header
    "entries": {"entry": "entry", "weights": "weights", "epoch": "epoch", "accuracy": "accuracy", "status": "status"},
    "units": {"entry": "entry", "layers": "layers", "units": "units", "constant_units": "constant",
              "mis_units": "scored"},
    "MIS": {"entry": "entry", "mis_mean": "mean", "mis_p5": "p5", "mis_p95": "p95"},
    "MIS tails and task accuracy": {"entry": "entry", "mis_worst5": "worst 5%", "mis_accuracy": "task acc"},
    "SemanticLens": {"entry": "entry", "clarity_mean": "clarity", "polysemanticity_mean": "polysem.",
                     "redundancy_mean": "redundancy"},
    "seconds": {"entry": "entry", "record_s": "record", "accuracy_s": "accuracy", "mis_s": "mis", "lens_s": "lens"},
}


def print_table(table, title: str) -> None:
    """The study table: whole with --format csv/json, else as panels of the columns that hold something (each
    readable in 80 columns)."""
    if machine_readable():
        print_frame(table, title=title, name="study")
        return
    for panel, columns in PANELS.items():
        shown = [c for c in columns if c in table and table[c].notna().any()]
        if len(shown) > 1:
            print_frame(table[shown].rename(columns=columns), title=f"{title}: {panel}", name="study")


@app.command("run")
@options_command
def run(
    study_file: Path = typer.Argument(..., help="The study file (TOML; see the studies guide)."),
    entries: Optional[list[str]] = typer.Argument(None, metavar="[ENTRY]...",
                                                  help="With --force: the entries to redo (default: all)."),
    out: Optional[Path] = typer.Option(None, help="Study folder (default: studies/<name>). Resumed if it exists."),
    fmt: str = FORMAT,
    *,
    options: StudyRunOptions,
) -> None:
    """Run every step of every entry, or bring the study folder up to date with the study file: steps whose inputs
    changed (and those reading them) are redone, new entries run, removed ones are listed. A failing entry is
    recorded and the others go on (exit status 1)."""
    from unitlens.study.runner import run_study

    if entries and not options.force:
        fail(f"entry names ({', '.join(entries)}) are for --force: unitlens study run {study_file} --force "
             f"{' '.join(entries)}")
    with failing_cleanly(), resumable("done steps are kept in the study folder"):
        result = run_study(study_file, out, options, entries=entries, notify=note)
    print_table(result.table, title=f"study {result.state['name']} -> {result.folder} ({result.seconds:.0f} s)")
    if result.failed:
        for name, why in result.failed.items():
            error(f"{name}: {why}", label="failed")
        total = sum(not r.get("removed") for r in result.state["entries"])
        error(f"{len(result.failed)} of {total} entries failed; fix the cause and run the same command again (done "
              "steps are kept).")
        raise typer.Exit(code=1)


@app.command("plan")
@options_command
def plan(
    study_file: Path = typer.Argument(..., help="The study file (TOML); its data folders need not exist yet."),
    fmt: str = FORMAT,
    table: Optional[str] = tables("entries", "check", "problems", "totals"),
    *,
    options: StudyPlanOptions,
) -> None:
    """Dry run: per entry the resolved model and tag, input size, layers, units, what the check before the record
    pass leaves out or splits, and the atlas's estimated size; then the totals. Loads no weights, reads no data."""
    import pandas as pd

    from unitlens.study.plan import plan_study

    with failing_cleanly():
        planned = plan_study(study_file, options)
    frame = planned.table
    shown = ["entry", "input_size", "layers", "units", "left_out", "split", "atlas_mb"]
    print_frame(frame[shown], title=f"plan of study {planned.name}", name="entries", full=frame, key=["entry"])
    checked, problems = frame[frame["check"] != ""], frame[frame["problem"] != ""]
    if not machine_readable():  # csv and json carry these columns in the entries table
        if len(checked):
            print_frame(checked[["entry", "check"]], title="left out or split by the check before the pass",
                        name="check", key=["entry"])
        if len(problems):
            print_frame(problems[["entry", "problem"]], title="entries that cannot be recorded as they are",
                        name="problems", key=["entry"])
    print_frame(pd.DataFrame([{**planned.totals(), "seconds": round(planned.seconds, 1)}]), title="totals",
                name="totals")


@app.command("summary")
def summary(
    folder: Path = typer.Argument(..., help="Study folder (from unitlens study run)."),
    fmt: str = FORMAT,
) -> None:
    """Print the study table (one row per entry) and write it to DIR/study.parquet."""
    from unitlens.study.summary import write_summary

    with failing_cleanly():
        table = write_summary(folder)
    print_table(table, title=f"study {folder}")
    say(f"wrote {folder / 'study.parquet'}")


@app.command("query")
def query(
    folder: Path = typer.Argument(..., help="Study folder."),
    sql: str = typer.Argument(..., help="DuckDB SQL queries (SELECT only) over the views units, scores (both with an "
                                        "entry column) and study."),
    fmt: str = FORMAT,
) -> None:
    """Run read-only SQL over the study: views units, scores (every atlas's tables, with an entry column) and study;
    nothing else is readable and nothing can be written."""
    from unitlens.study.query import query as run_query

    with failing_cleanly():
        frame = run_query(folder, sql)
    print_frame(frame, title=sql, name="result")
