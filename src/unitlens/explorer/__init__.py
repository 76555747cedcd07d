"""The explorer: every unit of an atlas in a browser, as a local web app (``unitlens serve``) or a static folder
(``unitlens report``), one front end for both (``assets/``: plain HTML, CSS and JavaScript, nothing fetched from
the network).

::

    catalog = Catalog(["atlas/lite0-demo", "studies/lite-family"])   # atlases and study folders, unique names
    serve(["atlas/lite0-demo"], port=8765)                           # blocks; read-only but for its cache
    write_report(["atlas/lite0-demo"], "report/", layers="blocks.*") # opens from file://

``serve`` takes ``ServeOptions`` and ``write_report`` takes ``ReportOptions`` (or their fields as keywords).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.explorer.atlas_view import AtlasView
    from unitlens.explorer.catalog import Catalog
    from unitlens.explorer.options import ReportOptions, ServeOptions
    from unitlens.explorer.server import BackgroundServer, create_app, serve
    from unitlens.explorer.static_site import ReportResult, write_report
    from unitlens.explorer.study_view import StudyView

__all__ = ["AtlasView", "BackgroundServer", "Catalog", "ReportOptions", "ReportResult", "ServeOptions", "StudyView",
           "create_app", "serve", "write_report"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AtlasView": "unitlens.explorer.atlas_view",
        "Catalog": "unitlens.explorer.catalog",
        "BackgroundServer": "unitlens.explorer.server",
        "create_app": "unitlens.explorer.server",
        "serve": "unitlens.explorer.server",
        "ReportOptions": "unitlens.explorer.options",
        "ServeOptions": "unitlens.explorer.options",
        "ReportResult": "unitlens.explorer.static_site",
        "write_report": "unitlens.explorer.static_site",
        "StudyView": "unitlens.explorer.study_view",
    },
)
