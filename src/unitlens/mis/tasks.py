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

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from unitlens.errors import BadInput, BiasWarning, TooFewExemplars, TooFewImages
from unitlens.mis.defaults import K_EXPL, N_TASKS
from unitlens.runtime import torch_threads


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


def _fits(n_images: int, n_tasks: int, k_expl: int) -> str:
    """How to lower N or K so that 2·N·(K+1) <= n_images, as text; empty when nothing fits."""
    ways = []
    n_fit = n_images // (2 * (k_expl + 1))
    if n_fit >= 1:
        ways.append(f"n_tasks to {n_fit} (--n-tasks {n_fit})")
    k_fit = n_images // (2 * n_tasks) - 1
    if k_fit >= 1:
        ways.append(f"k_expl to {k_fit} (--k-expl {k_fit})")
    return " or ".join(ways)


def check_dataset(n_images: int, n_tasks: int = N_TASKS, k_expl: int = K_EXPL, where: str = "",
                  allow_overlap: bool = False, recorded_k: int | None = None) -> int:
    """Refuse MIS on a dataset of fewer than 2·N·(K+1) images; return how many images each unit's top and
    bottom N·(K+1) exemplars then share (0 when the dataset is large enough).

    With fewer images the most and least activating sets of every unit overlap, so the tasks compare images with
    themselves and the score is biased (accuracy below chance). ``allow_overlap`` scores anyway (with a warning)
    as long as each side can be filled at all; the caller reports the overlap.
    """
    need = min_exemplars(n_tasks, k_expl)
    if n_images >= 2 * need:
        return 0
    head = f"{where + ': ' if where else ''}the dataset holds only {n_images} readable images"
    why = (f"MIS with n_tasks={n_tasks} and k_expl={k_expl} needs 2·N·(K+1) = {2 * need}: each unit's {need} most "
           f"and {need} least activating images must be different images")
    fits = _fits(n_images, n_tasks, k_expl)
    fix = (f"record the atlas on at least {2 * need} images" + (f", or lower {fits}" if fits else "")
           + " (the atlas's k is not the problem)")
    if n_images < need:
        kept = (f"; every unit keeps all {n_images} as exemplars (recorded with --k {recorded_k})"
                if recorded_k is not None and recorded_k > n_images else "")
        raise TooFewImages(f"{head}, but {why}{kept}. The dataset is too small: {fix}")
    shared = 2 * need - n_images
    if not allow_overlap:
        raise TooFewImages(
            f"{head}, but {why}; with {n_images} images {shared} of them would be in both sets of every unit, "
            f"which biases MIS (accuracy below chance). The dataset is too small: {fix}; or score anyway with "
            f"allow_overlap=True (--allow-overlap), which reports the overlap")
    warnings.warn(f"{head}: each unit's top and bottom {need} exemplars share {shared} images, so its MIS is "
                  f"biased; {fix}", BiasWarning, stacklevel=2)
    return shared


def check_exemplars(k: int, n_tasks: int = N_TASKS, k_expl: int = K_EXPL, where: str = "") -> None:
    """Raise :class:`TooFewExemplars` if ``k`` exemplars per side cannot fill N tasks of K explanations.

    Check the dataset first (:func:`check_dataset`): an atlas of a small dataset keeps fewer exemplars than
    it was recorded with, and recording with a larger ``--k`` would not help.
    """
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
        """C, the number of units."""
        return self.pos_expl.shape[0]

    @property
    def n_tasks(self) -> int:
        """N, the number of tasks per unit."""
        return self.pos_expl.shape[1]

    @property
    def k_expl(self) -> int:
        """K, the number of explanations per side and task."""
        return self.pos_expl.shape[2]

    def __getitem__(self, units) -> "Tasks":
        """The tasks of a subset of units (an index, slice or boolean mask over C)."""
        return Tasks(self.pos_expl[units], self.neg_expl[units], self.pos_query[units], self.neg_query[units])

    def ids(self) -> torch.Tensor:
        """Every id the tasks use, sorted and unique.

        Returns
        -------
        torch.Tensor
            (M,) the ids, e.g. the images to embed.
        """
        return torch.unique(torch.cat([t.reshape(-1) for t in
                                       (self.pos_expl, self.neg_expl, self.pos_query, self.neg_query)]))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Tasks":
        """The same tasks with ``fn`` applied to each id tensor (e.g. sample ids to rows of an embedding table).

        Parameters
        ----------
        fn : callable
            Takes an id tensor and returns one of the same shape.

        Returns
        -------
        Tasks
            New tasks of ``fn``'s results.
        """
        return Tasks(fn(self.pos_expl), fn(self.neg_expl), fn(self.pos_query), fn(self.neg_query))

    def bags(self) -> torch.Tensor:
        """The positive and the negative explanations of every task, in one tensor.

        Returns
        -------
        torch.Tensor
            (C·N, 2, K): index 0 the positive, 1 the negative explanations; unit-major.
        """
        return torch.stack([self.pos_expl, self.neg_expl], 2).reshape(-1, 2, self.k_expl)

    def queries(self) -> torch.Tensor:
        """The positive and the negative query of every task, in one tensor.

        Returns
        -------
        torch.Tensor
            (C·N, 2): index 0 the positive, 1 the negative query; in the order of :meth:`bags`.
        """
        return torch.stack([self.pos_query, self.neg_query], 2).reshape(-1, 2)


@torch_threads(1)  # index gathers: single-threaded is fastest, and robust on busy cores
def build_tasks(top_ids: torch.Tensor, bottom_ids: torch.Tensor, n_tasks: int = N_TASKS,
                k_expl: int = K_EXPL, where: str = "") -> Tasks:
    """Tasks of every unit from its exemplar ids.

    Only the first N·(K+1) of each side are used: the first N·K are spread over the tasks as explanations (task
    i gets ranks i, i+N, ..., i+(K−1)N), the last N are the queries.

    Parameters
    ----------
    top_ids : torch.Tensor
        (C, k) in descending activation order (as an atlas stores them); a single unit may be given as (k,).
    bottom_ids : torch.Tensor
        (C, k) in ascending activation order, or (k,).
    n_tasks : int
        N, the tasks per unit.
    k_expl : int
        K, the explanations per side and task.
    where : str
        Names the layer in error messages.

    Returns
    -------
    Tasks
        The tasks as ids: explanations (C, N, K), queries (C, N).

    Raises
    ------
    BadInput
        If the shapes differ or are not (C, k).
    TooFewExemplars
        If k < N·(K+1).
    """
    if top_ids.ndim == 1:
        top_ids, bottom_ids = top_ids[None], bottom_ids[None]
    if top_ids.ndim != 2 or top_ids.shape != bottom_ids.shape:
        raise BadInput(f"expected two (C, k) id tensors of the same shape, got {tuple(top_ids.shape)} "
                         f"and {tuple(bottom_ids.shape)}")
    check_exemplars(top_ids.shape[1], n_tasks, k_expl, where)
    expl, query = task_layout(n_tasks, k_expl)
    return Tasks(pos_expl=_columns(top_ids, expl), neg_expl=_columns(bottom_ids, expl),
                 pos_query=_columns(top_ids, query), neg_query=_columns(bottom_ids, query))


def task_rows(exemplars: torch.Tensor, n_tasks: int = N_TASKS, k_expl: int = K_EXPL) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """The tasks of C units straight from their (C, 2·N·(K+1)) exemplars — the first N·(K+1) top exemplars
    (descending) followed by the first N·(K+1) bottom ones (ascending) — in one gather: explanation bags
    (C·N, 2, K) (positive, negative) and queries (C·N, 2) (positive, negative), as :meth:`Tasks.bags` and
    :meth:`Tasks.queries` order them.
    """
    need = min_exemplars(n_tasks, k_expl)
    if exemplars.ndim != 2 or exemplars.shape[1] != 2 * need:
        raise BadInput(f"expected (C, {2 * need}) exemplars (top then bottom), got {tuple(exemplars.shape)}")
    expl, query = task_layout(n_tasks, k_expl)
    bags = _columns(exemplars, torch.stack([expl, expl + need], 1))  # (C, N, 2, K)
    queries = _columns(exemplars, torch.stack([query, query + need], 1))  # (C, N, 2)
    return bags.reshape(-1, 2, k_expl), queries.reshape(-1, 2)


def _columns(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[:, index]`` for a (C, k) tensor; on the CPU through numpy, whose take is 4-7x faster than torch's
    index kernels for these shapes (measured 0.2 ms against 1.4 ms for 2,000 units of N = 20 tasks, K = 9)."""
    if x.device.type != "cpu" or x.requires_grad:
        return x[:, index.to(x.device)]
    return torch.from_numpy(np.take(x.numpy(), index.numpy(), axis=1))


def tasks_from_exemplars(exemplars, n_tasks: int = N_TASKS, k_expl: int = K_EXPL, where: str = "") -> Tasks:
    """:func:`build_tasks` on an atlas ``Exemplars`` record (``atlas.exemplars(layer)``)."""
    return build_tasks(exemplars.top_ids, exemplars.bottom_ids, n_tasks, k_expl, where)
