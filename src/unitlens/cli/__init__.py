"""The ``unitlens`` command line: a thin layer over the Python API (its defaults are the API's constants).

One module per command group; each command imports the domain packages it needs inside its body, so
``unitlens --help`` starts without loading torch.
"""

from __future__ import annotations

import typer

from unitlens.cli import atlas, audit, basis, explorer, featviz, lens, mis, plot, probe, record, relevance, study

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

__all__ = ["app"]

if __name__ == "__main__":
    app()
