"""2-AFC task construction for the Machine Interpretability Score (paper appendix A.2, DESIGN.md "MIS").

For every unit, from its N·(K+1) most activating samples (descending) and least activating samples
(ascending):

- the first N·K of each side are the explanation pool, the last N the queries;
- the pool is spread over the tasks so that each task sees the whole range of activation levels:
  task i gets pool ranks i, i+N, i+2N, …, i+(K−1)N, and its query is rank N·K + i.

Everything here is index arithmetic on (C, k) id tensors, done for all units of a layer at once. Tasks can
also be given directly as explanation *embeddings* (appendix D: feature visualisations or any other
explanation method) — see :func:`unitlens.mis.scoring.score_embeddings`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from unitlens.errors import BadInput, TooFewExemplars
from unitlens.mis.defaults import K_EXPL, N_TASKS


def min_exemplars(n_tasks: int = N_TASKS, k_expl: int = K_EXPL) -> int:
    """Exemplars needed per side: N·(K+1)."""
    return n_tasks * (k_expl + 1)


def task_layout(n_tasks: int = N_TASKS, k_expl: int = K_EXPL) -> tuple[torch.Tensor, torch.Tensor]:
    """Exemplar ranks of the tasks: explanations (N, K) with ``[i, j] = i + j·N`` and queries (N,) ``N·K + i``."""
    if n_tasks < 1 or k_expl < 1:
        raise BadInput(f"n_tasks and k_expl must be at least 1 (got n_tasks={n_tasks}, k_expl={k_expl})")
    tasks = torch.arange(n_tasks)
    expl = tasks[:, None] + n_tasks * torch.arange(k_expl)[None, :]
    return expl, n_tasks * k_expl + tasks


def check_exemplars(k: int, n_tasks: int = N_TASKS, k_expl: int = K_EXPL, where: str = "") -> None:
    """Raise :class:`TooFewExemplars` if ``k`` exemplars per side cannot fill N tasks of K explanations."""
    need = min_exemplars(n_tasks, k_expl)
    if k < need:
        most = k // (k_expl + 1)
        lower = (f"lower n_tasks to at most {most} (--n-tasks {most})" if most >= 1
                 else "lower k_expl (--k-expl)")
        raise TooFewExemplars(
            f"{where + ': ' if where else ''}{k} exemplars per unit and side, but MIS with n_tasks={n_tasks} "
            f"and k_expl={k_expl} needs at least N·(K+1) = {need}; {lower}, or record the atlas with "
            f"--k {need} or more"
        )


@dataclass
class Tasks:
    """The N tasks of C units as sample ids (or any row index into an embedding table).

    ``pos_expl``/``neg_expl`` are (C, N, K): the positive (most activating) and negative (least activating)
    explanations of task i; ``pos_query``/``neg_query`` are (C, N).
    """

    pos_expl: torch.Tensor
    neg_expl: torch.Tensor
    pos_query: torch.Tensor
    neg_query: torch.Tensor

    @property
    def n_units(self) -> int:
        return self.pos_expl.shape[0]

    @property
    def n_tasks(self) -> int:
        return self.pos_expl.shape[1]

    @property
    def k_expl(self) -> int:
        return self.pos_expl.shape[2]

    def __getitem__(self, units) -> "Tasks":
        """The tasks of a subset of units (an index, slice or boolean mask over C)."""
        return Tasks(self.pos_expl[units], self.neg_expl[units], self.pos_query[units], self.neg_query[units])

    def ids(self) -> torch.Tensor:
        """Every id the tasks use, sorted and unique."""
        return torch.unique(torch.cat([t.reshape(-1) for t in
                                       (self.pos_expl, self.neg_expl, self.pos_query, self.neg_query)]))

    def map(self, fn) -> "Tasks":
        return Tasks(fn(self.pos_expl), fn(self.neg_expl), fn(self.pos_query), fn(self.neg_query))


def build_tasks(top_ids: torch.Tensor, bottom_ids: torch.Tensor, n_tasks: int = N_TASKS,
                k_expl: int = K_EXPL, where: str = "") -> Tasks:
    """Tasks of every unit from its exemplar ids.

    ``top_ids`` is (C, k) in descending activation order, ``bottom_ids`` (C, k) in ascending order (as an
    atlas stores them); a single unit may be given as (k,). Only the first N·(K+1) of each side are used.
    """
    if top_ids.ndim == 1:
        top_ids, bottom_ids = top_ids[None], bottom_ids[None]
    if top_ids.ndim != 2 or top_ids.shape != bottom_ids.shape:
        raise BadInput(f"expected two (C, k) id tensors of the same shape, got {tuple(top_ids.shape)} "
                         f"and {tuple(bottom_ids.shape)}")
    check_exemplars(top_ids.shape[1], n_tasks, k_expl, where)
    expl, query = task_layout(n_tasks, k_expl)
    expl, query = expl.to(top_ids.device), query.to(top_ids.device)
    return Tasks(pos_expl=top_ids[:, expl], neg_expl=bottom_ids[:, expl],
                 pos_query=top_ids[:, query], neg_query=bottom_ids[:, query])


def tasks_from_exemplars(exemplars, n_tasks: int = N_TASKS, k_expl: int = K_EXPL, where: str = "") -> Tasks:
    """:func:`build_tasks` on an atlas ``Exemplars`` record (``atlas.exemplars(layer)``)."""
    return build_tasks(exemplars.top_ids, exemplars.bottom_ids, n_tasks, k_expl, where)
