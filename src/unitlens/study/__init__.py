"""Studies: many models (or the checkpoints of a training run) recorded and scored together, on one machine or on
Ray, and compared in one table, SQL views and the paper's comparative figures.

    run = run_study("studies/lite-family.toml", "studies/lite-family")    # resumable; failures isolated
    study = Study.load("studies/lite-family")
    study.entries, study.atlas("efficientnet_lite0"), study.summary(), study.query("SELECT * FROM study")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.study.figures import plot_study, study_figures_data
    from unitlens.study.runner import StudyRun, run_study
    from unitlens.study.spec import Entry, StudySpec, load_spec
    from unitlens.study.study import Study, StudyEntry
    from unitlens.study.summary import summarize, write_summary

__all__ = ["Entry", "Study", "StudyEntry", "StudyRun", "StudySpec", "load_spec", "plot_study", "run_study",
           "study_figures_data", "summarize", "write_summary"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "plot_study": "unitlens.study.figures",
        "study_figures_data": "unitlens.study.figures",
        "StudyRun": "unitlens.study.runner",
        "run_study": "unitlens.study.runner",
        "Entry": "unitlens.study.spec",
        "StudySpec": "unitlens.study.spec",
        "load_spec": "unitlens.study.spec",
        "Study": "unitlens.study.study",
        "StudyEntry": "unitlens.study.study",
        "summarize": "unitlens.study.summary",
        "write_summary": "unitlens.study.summary",
    },
)
