"""The ``unitlens`` command line: a thin layer over the Python API (its defaults are the API's constants).

One module per command group; each command imports the domain packages it needs inside its body, so
``unitlens --help`` starts without loading torch.
"""

from __future__ import annotations

import typer

from unitlens.cli import atlas, audit, basis, explorer, featviz, lens, mis, plot, probe, record, relevance, study
from unitlens.cli.common import err_console

app = typer.Typer(
    help="Measure and explain every unit of a vision model.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.command("layers")(record.layers)
app.command("record")(record.record)
app.add_typer(atlas.app, name="atlas")
app.add_typer(mis.app, name="mis")
app.add_typer(lens.app, name="lens")
app.add_typer(plot.app, name="plot")
app.add_typer(audit.app, name="audit")
app.add_typer(basis.app, name="basis")
app.command("featviz")(featviz.featviz)
app.command("relevance")(relevance.relevance)
app.command("graph")(relevance.graph)
app.add_typer(study.app, name="study")
app.command("probe")(probe.probe)
app.command("serve")(explorer.serve)
app.command("report")(explorer.report)



def main() -> None:
    """The ``unitlens`` command: ``app``, where a missing package of an optional extra is an error naming the
    extra to install (exit status 2) instead of a traceback, like any ``UnitlensError`` a command raises."""
    from rich.markup import escape

    from unitlens.errors import UnitlensError
    from unitlens.extras import missing_extra

    try:
        app()
    except (ModuleNotFoundError, UnitlensError) as err:
        problem = err if isinstance(err, UnitlensError) else missing_extra(err)
        if problem is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(problem))}")
        raise SystemExit(2) from None


__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
