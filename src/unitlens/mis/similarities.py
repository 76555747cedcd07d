"""The hot loop of MIS: the similarity contrasts of every 2-AFC task, for all tasks of many units at once.

For task t with explanation sets E⁺, E⁻ (K each) and queries q⁺, q⁻, both functions return the (T, 2) tensor
``C[t, a] = Σ_{e ∈ E⁺} f(q_a, e) − Σ_{e ∈ E⁻} f(q_a, e)`` (a: q⁺, q⁻), so that Δ⁺ = C[t, 0] / K and
Δ⁻ = C[t, 1] / K.

- :func:`embedding_contrasts` — f is the dot product of rows of an (n, D) embedding table. The sum is linear,
  so ``C[t, a] = q_a · (ΣE⁺ − ΣE⁻)``: one fused gather-sum of the task's 2K explanations with weights ±1
  (``embedding_bag``; the (T, K, D) explanation rows are never materialised), shared by both queries, and two
  dot products per task.
- :func:`matrix_contrasts` — f is read from a precomputed (n, n) similarity matrix: the same weighted bag over
  the matrix's entries, 4K gathered scalars per task (1.7x faster than ``take`` and a sum).

On the CPU (measured on the synthetic layer of ``benchmarks/mis_speed.py``, 2 shared cores; see README):

- the embedding table is processed in column blocks of :data:`COLUMNS`: a (10,000, 128) float32 block stays in
  cache where whole 512-wide rows of the 20 MB table do not, and the gather is bound by memory traffic
  (0.064 s against 0.148 s with whole rows, one worker; 64, 96, 192 and 256 columns and 1,024 or 4,096 tasks
  per job were slower);
- the work is cut into jobs (column block × :data:`CPU_TASKS` tasks) run by a pool of worker threads with one
  intra-op thread each: a core taken by another process delays one job instead of stalling a whole OpenMP
  team at every operation, and a worker's chunk-sized buffers are reused instead of page-faulted afresh
  (14,000 page faults per call in the main thread, none in a worker);
- each job writes its own slot of the result and the column blocks are summed in a fixed order, so results
  do not depend on the number of threads or on scheduling.

Elsewhere (an accelerator, or when gradients are needed) the same contrasts run as plain chunked operations.
Everything stays in the table's dtype (float32 or float64): a float16 table was no faster here (its conversion
costs what the halved traffic saves), moved MIS by up to 4e-5 and flipped task outcomes, so it is not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unitlens.runtime import run_jobs

COLUMNS = 128  # embedding columns per CPU job
CPU_TASKS = 2048  # tasks per CPU job: its (tasks, 2, COLUMNS) intermediates stay in the core's cache
ACCELERATOR_BYTES = 256 * 2**20  # intermediates per chunk on an accelerator


def _pooled(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled())


def _signs(k: int, rows: int, like: torch.Tensor) -> torch.Tensor:
    """(rows, 2K) bag weights: +1 for the K positive explanations, -1 for the K negative ones (contiguous)."""
    return torch.cat([torch.ones(k), -torch.ones(k)]).to(like).expand(max(rows, 1), 2 * k).contiguous()


def embedding_contrasts(table: torch.Tensor, bags: torch.Tensor, queries: torch.Tensor, step: int | None = None,
                        threads: int | None = None) -> torch.Tensor:
    """(T, 2) contrasts from an (n, D) table; ``bags`` (T, 2, K) and ``queries`` (T, 2) are table rows.

    ``step``: tasks per job or chunk (default: cache-sized on CPU, memory-sized on an accelerator).
    """
    n_tasks, _, k = bags.shape
    dim = table.shape[1]
    flat = bags.reshape(n_tasks, 2 * k)
    pooled = _pooled(table)
    step = step or (CPU_TASKS if pooled else max(1, ACCELERATOR_BYTES // (4 * dim * table.element_size())))
    signs = _signs(k, min(step, n_tasks), table)

    def contrasts(block: torch.Tensor, a: int, z: int, out: torch.Tensor | None = None) -> torch.Tensor:
        diff = F.embedding_bag(flat[a:z], block, mode="sum", per_sample_weights=signs[:z - a])  # ΣE⁺ − ΣE⁻
        q = F.embedding(queries[a:z], block)  # q⁺, q⁻
        return torch.bmm(q, diff.unsqueeze(2), out=out)

    if not pooled:
        parts = [contrasts(table, a, min(n_tasks, a + step)) for a in range(0, n_tasks, step)]
        return torch.cat(parts).view(-1, 2) if parts else table.new_zeros(0, 2)
    blocks = [table[:, c:c + COLUMNS].contiguous() for c in range(0, dim, COLUMNS)] if dim > COLUMNS else [table]
    out = table.new_empty(len(blocks), n_tasks, 2, 1)

    def job(item: tuple[int, int]) -> None:
        b, a = item
        z = min(n_tasks, a + step)
        contrasts(blocks[b], a, z, out=out[b, a:z])

    run_jobs([(b, a) for b in range(len(blocks)) for a in range(0, n_tasks, step)], job, threads)
    return out.sum(0).view(-1, 2)


def matrix_contrasts(similarity: torch.Tensor, bags: torch.Tensor, queries: torch.Tensor, step: int | None = None,
                     threads: int | None = None) -> torch.Tensor:
    """(T, 2) contrasts read from an (n, n) matrix; ``bags`` (T, 2, K), ``queries`` (T, 2) are its rows (int32
    rows keep the index arithmetic in int32, which suffices below n = 46,340)."""
    n = similarity.shape[0]
    n_tasks, _, k = bags.shape
    entries = similarity.reshape(-1, 1)  # the matrix as a table of one-element rows
    if n * n >= 2**31:
        bags, queries = bags.long(), queries.long()
    flat = bags.reshape(n_tasks, 1, 2 * k)
    pooled = _pooled(similarity)
    step = step or (CPU_TASKS if pooled else max(1, ACCELERATOR_BYTES // (4 * k * 8)))
    signs = _signs(k, 2 * min(step, n_tasks), similarity)

    def contrasts(a: int, z: int) -> torch.Tensor:
        index = (queries[a:z, :, None] * n + flat[a:z]).view(-1, 2 * k)  # entry (q_a, e) of every pair
        return F.embedding_bag(index, entries, mode="sum", per_sample_weights=signs[:2 * (z - a)]).view(z - a, 2)

    if not pooled:
        parts = [contrasts(a, min(n_tasks, a + step)) for a in range(0, n_tasks, step)]
        return torch.cat(parts) if parts else similarity.new_zeros(0, 2)
    out = similarity.new_empty(n_tasks, 2)

    def job(a: int) -> None:
        z = min(n_tasks, a + step)
        out[a:z] = contrasts(a, z)

    run_jobs(range(0, n_tasks, step), job, threads)
    return out
