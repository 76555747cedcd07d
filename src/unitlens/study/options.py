"""``StudyRunOptions`` and ``StudyPlanOptions``: how a study runs (``run_study``, ``unitlens study run``) and how a
plan estimates it (``plan_study``, ``unitlens study plan``). None of them changes a result: the study file says
what is computed."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.errors import BadInput
from unitlens.options import Options, option
from unitlens.study.defaults import GPUS_PER_TASK, JOBS, MEMORY_BUDGET_MB


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be positive, got {value}"


@dataclass(frozen=True)
class StudyRunOptions(Options):
    """Where the tasks of a study run (this process, worker processes, Ray), what each Ray task asks for, and
    what is redone or deleted."""

    jobs: int = option(JOBS, "Entries in parallel worker processes on this machine.", min=1)
    ray: str | None = option(None, "Run one Ray task per entry and step: alone, a local Ray instance; with an "
                                    "address (auto, ray://host:10001), that cluster.", metavar="[ADDRESS]")
    cpus_per_task: int | None = option(None, "CPUs each Ray task asks for (default: the study's threads). Every "
                                             "step runs on the study file's threads.", min=1)
    gpus_per_task: float = option(GPUS_PER_TASK, "GPUs each Ray task asks for.", min=0.0)
    memory_budget_mb: float = option(MEMORY_BUDGET_MB, "MB of model weights and record state that the models of "
                                                       "one shared record pass may take.", check=_positive,
                                     flag="--memory-budget")
    force: bool = option(False, "Redo every step of the ENTRY arguments (of all without).", flag="--force")
    prune: bool = option(False, "Delete the atlases of entries the study file no longer has (else they are kept "
                                "and listed as removed).", flag="--prune")

    def validate(self) -> None:
        if self.ray is not None and self.jobs > 1:
            raise BadInput("give either jobs (--jobs: processes on this machine) or ray (--ray: a Ray cluster), "
                           "not both")
        if self.cpus_per_task is not None and self.ray is None:
            raise BadInput("cpus_per_task (--cpus-per-task) is what each Ray task asks for (with --ray); the torch "
                           "threads of every step are the study file's threads = N (default 1), whatever runs it")


@dataclass(frozen=True)
class StudyPlanOptions(Options):
    """How a plan estimates the run."""

    jobs: int | None = option(None, "Worker processes (default: one per 50 distinct models, at most the cores).",
                              min=1)
