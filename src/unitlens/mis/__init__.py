"""Machine Interpretability Score (MIS): 2-AFC task construction, vectorised scoring, calibration.

Tensors::

    tasks = build_tasks(top_ids, bottom_ids, n_tasks=20, k_expl=9)     # (C, k) exemplar ids -> Tasks
    res = mis.score(table, tasks, tau=0.16)                             # (n, D) normalised embeddings
    res.mis, res.accuracy, res.margin                                   # (C,), (C,), (C, N)

Atlases::

    run = mis.score_mis("atlas/", backend="offline", n_tasks=20)       # MISRun; scores.parquet
    run.frame, run.summary()                                            # per unit; per layer / type / model
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.mis.calibrate import TauFit, fit_tau, noise_ceiling
    from unitlens.mis.defaults import BACKEND, K_EXPL, N_TASKS, TAU
    from unitlens.mis.options import CalibrationOptions, MISOptions
    from unitlens.mis.scoring import (
        MISRun,
        MISScores,
        accuracy_from_margins,
        load_scores,
        mis_from_margins,
        score,
        score_embeddings,
        score_mis,
        summarize,
    )
    from unitlens.mis.tasks import (
        Tasks,
        build_tasks,
        min_exemplars,
        task_layout,
        tasks_from_exemplars,
    )

__all__ = [
    "BACKEND",
    "CalibrationOptions",
    "K_EXPL",
    "MISOptions",
    "MISRun",
    "MISScores",
    "N_TASKS",
    "TAU",
    "Tasks",
    "TauFit",
    "accuracy_from_margins",
    "build_tasks",
    "fit_tau",
    "load_scores",
    "min_exemplars",
    "mis_from_margins",
    "noise_ceiling",
    "score",
    "score_mis",
    "score_embeddings",
    "summarize",
    "task_layout",
    "tasks_from_exemplars",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TauFit": "unitlens.mis.calibrate",
        "fit_tau": "unitlens.mis.calibrate",
        "noise_ceiling": "unitlens.mis.calibrate",
        "BACKEND": "unitlens.mis.defaults",
        "K_EXPL": "unitlens.mis.defaults",
        "N_TASKS": "unitlens.mis.defaults",
        "TAU": "unitlens.mis.defaults",
        "CalibrationOptions": "unitlens.mis.options",
        "MISOptions": "unitlens.mis.options",
        "MISRun": "unitlens.mis.scoring",
        "MISScores": "unitlens.mis.scoring",
        "accuracy_from_margins": "unitlens.mis.scoring",
        "load_scores": "unitlens.mis.scoring",
        "mis_from_margins": "unitlens.mis.scoring",
        "score": "unitlens.mis.scoring",
        "score_mis": "unitlens.mis.scoring",
        "score_embeddings": "unitlens.mis.scoring",
        "summarize": "unitlens.mis.scoring",
        "Tasks": "unitlens.mis.tasks",
        "build_tasks": "unitlens.mis.tasks",
        "min_exemplars": "unitlens.mis.tasks",
        "task_layout": "unitlens.mis.tasks",
        "tasks_from_exemplars": "unitlens.mis.tasks",
    },
)
