"""Machine Interpretability Score (MIS): 2-AFC task construction, vectorised scoring, calibration.

Tensors::

    tasks = build_tasks(top_ids, bottom_ids, n_tasks=20, k_expl=9)     # (C, k) exemplar ids -> Tasks
    res = mis.score(table, tasks, tau=0.16)                             # (n, D) normalised embeddings
    res.mis, res.accuracy, res.margin                                   # (C,), (C,), (C, N)

Atlases::

    frame = mis.score_atlas("atlas/", "offline")                        # per-unit table, scores.parquet
    tables = mis.summarize(frame)                                       # per layer / type / model
"""
from unitlens.mis.calibrate import TauFit, fit_tau, noise_ceiling
from unitlens.mis.score import (TAU, MISRun, MISScores, accuracy_from_margins, load_scores, mis_from_margins,
                                run_atlas, score, score_atlas, score_embeddings, summarize)
from unitlens.mis.tasks import (K_EXPL, N_TASKS, Tasks, TooFewExemplars, build_tasks, min_exemplars,
                                task_layout, tasks_from_exemplars)

__all__ = [
    "K_EXPL", "N_TASKS", "TAU", "MISRun", "MISScores", "TauFit", "Tasks", "TooFewExemplars",
    "accuracy_from_margins", "build_tasks", "fit_tau", "load_scores", "min_exemplars", "mis_from_margins",
    "noise_ceiling", "run_atlas", "score", "score_atlas", "score_embeddings", "summarize", "task_layout",
    "tasks_from_exemplars",
]
