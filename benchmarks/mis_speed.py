"""MIS scoring speed: the vectorised scorer against a per-unit, per-task loop, same data, same run.

    .venv/bin/python benchmarks/mis_speed.py
    .venv/bin/python benchmarks/mis_speed.py --atlas atlas/lite0-demo   # also a real atlas (after unitlens mis)

Synthetic layer (seeded): ``--units`` units whose k = 200 top/bottom exemplar ids are drawn from ``--images``
images with ``--dim``-dimensional L2-normalised float32 embeddings; N = 20 tasks, K = 9, τ = 0.16.

Baselines, written from the paper's equations with plain Python loops over units and tasks:

- ``loop``: eq. (1) literally — for every unit, task and explanation one ``numpy.dot`` f(q, e), the mean as
  the aggregation a, then eqs. (2)–(5);
- ``loop-matvec``: the same loops, but s(q, E) as one matrix-vector product per (query, explanation set),
  a stronger baseline that is reported alongside.

Both baselines must agree with the vectorised scores to 1e-6 (MIS and accuracy); the script fails otherwise.
With ``--atlas`` it also times the scorer on every scorable unit of a real atlas (embeddings from the atlas's
``offline`` cache, filled first if needed), as ``run_atlas`` scores them, against the ``loop`` baseline on a
random sample of ``--atlas-sample`` of those units.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from unitlens.mis.scoring import score
from unitlens.mis.tasks import build_tasks


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def loop_pairwise(table: np.ndarray, top: np.ndarray, bottom: np.ndarray, n_tasks: int, k_expl: int,
                  tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, per task, per explanation: f(q, e) = q·e, s = mean, Δ±, p = σ((Δ⁺ − Δ⁻)/τ)."""
    n_units = top.shape[0]
    mis, acc = np.zeros(n_units), np.zeros(n_units)
    nk = n_tasks * k_expl
    for c in range(n_units):
        total, solved = 0.0, 0
        for i in range(n_tasks):
            e_pos = [table[top[c, i + j * n_tasks]] for j in range(k_expl)]
            e_neg = [table[bottom[c, i + j * n_tasks]] for j in range(k_expl)]
            q_pos, q_neg = table[top[c, nk + i]], table[bottom[c, nk + i]]

            def s(q, expl):
                return sum(float(np.dot(q, e)) for e in expl) / len(expl)

            d_pos = s(q_pos, e_pos) - s(q_pos, e_neg)
            d_neg = s(q_neg, e_pos) - s(q_neg, e_neg)
            total += _sigmoid((d_pos - d_neg) / tau)
            solved += (d_pos - d_neg) > 0
        mis[c], acc[c] = total / n_tasks, solved / n_tasks
    return mis, acc


def loop_matvec(table: np.ndarray, top: np.ndarray, bottom: np.ndarray, n_tasks: int, k_expl: int,
                tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Same loops over units and tasks; s(q, E) = mean(E @ q)."""
    n_units = top.shape[0]
    mis, acc = np.zeros(n_units), np.zeros(n_units)
    nk = n_tasks * k_expl
    for c in range(n_units):
        total, solved = 0.0, 0
        for i in range(n_tasks):
            e_pos = table[top[c, i:nk:n_tasks]]
            e_neg = table[bottom[c, i:nk:n_tasks]]
            q_pos, q_neg = table[top[c, nk + i]], table[bottom[c, nk + i]]
            d_pos = float((e_pos @ q_pos).mean() - (e_neg @ q_pos).mean())
            d_neg = float((e_pos @ q_neg).mean() - (e_neg @ q_neg).mean())
            total += _sigmoid((d_pos - d_neg) / tau)
            solved += (d_pos - d_neg) > 0
        mis[c], acc[c] = total / n_tasks, solved / n_tasks
    return mis, acc


def synthetic(units: int, images: int, dim: int, k: int, seed: int):
    """Embeddings with some cluster structure, and per-unit exemplars that prefer one cluster (varied MIS)."""
    g = torch.Generator().manual_seed(seed)
    n_clusters = 32
    centres = torch.nn.functional.normalize(torch.randn(n_clusters, dim, generator=g), dim=1)
    label = torch.randint(0, n_clusters, (images,), generator=g)
    noise = torch.randn(images, dim, generator=g) / math.sqrt(dim)  # about unit norm, like a centre
    table = torch.nn.functional.normalize(centres[label] + noise, dim=1)
    # each unit: a random activation = affinity to a preferred cluster (random strength) + noise
    pref = torch.randint(0, n_clusters, (units,), generator=g)
    strength = torch.rand(units, generator=g) * 2
    top = torch.empty(units, k, dtype=torch.long)
    bottom = torch.empty(units, k, dtype=torch.long)
    for a in range(0, units, 256):
        b = min(units, a + 256)
        acts = strength[a:b, None] * (label[None, :] == pref[a:b, None]).float() + torch.randn(b - a, images,
                                                                                            generator=g)
        top[a:b] = acts.topk(k, dim=1).indices
        bottom[a:b] = acts.topk(k, dim=1, largest=False).indices
    return table, top, bottom


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def atlas_part(path: str, n_tasks: int, k_expl: int, tau: float, sample: int, seed: int) -> None:
    """Every scorable unit of an atlas, timed as ``run_atlas`` scores them (its ``score`` stage: task
    construction and scoring, one Gram matrix when the images are few), against the per-pair loop on a random
    sample of the same units (the loop over all of them would take minutes)."""
    from unitlens.atlas import Atlas
    from unitlens.backends import EmbeddingCache, load_backend
    from unitlens.mis.scoring import STATUS_SCORED, run_atlas

    backend = load_backend("offline", device="cpu")
    runs = [run_atlas(path, backend, n_tasks, k_expl, tau, device="cpu", write=False, progress=False)
            for _ in range(3)]
    tv = min(r.seconds["score"] for r in runs)
    frame = runs[0].frame
    scored = frame[frame["status"] == STATUS_SCORED].reset_index(drop=True)
    n_units = len(scored)
    pick = torch.randperm(n_units, generator=torch.Generator().manual_seed(seed))[:sample].numpy()
    a = Atlas(path)
    need = n_tasks * (k_expl + 1)
    ex = {name: a.exemplars(name) for name in scored.loc[pick, "layer"].unique()}
    chosen = list(zip(scored.loc[pick, "layer"], scored.loc[pick, "unit"]))
    top = np.stack([ex[layer].top_ids[u, :need].numpy() for layer, u in chosen])
    bottom = np.stack([ex[layer].bottom_ids[u, :need].numpy() for layer, u in chosen])
    ids = np.unique(np.concatenate([top.ravel(), bottom.ravel()]))
    table = EmbeddingCache(a, backend).get(torch.from_numpy(ids), progress=False).numpy()
    rows_top, rows_bottom = np.searchsorted(ids, top), np.searchsorted(ids, bottom)
    tl, (mis_l, acc_l) = best_of(lambda: loop_pairwise(table, rows_top, rows_bottom, n_tasks, k_expl, tau), 1)
    diff = max(float(np.abs(mis_l - scored.loc[pick, "mis"].to_numpy()).max()),
               float(np.abs(acc_l - scored.loc[pick, "mis_accuracy"].to_numpy()).max()))
    assert diff <= 1e-6, f"atlas: vectorised and loop scores differ by {diff:.2e}"
    print(f"atlas {path}: {len(frame['layer'].unique())} layers, {n_units} scored units, {runs[0].n_images} images, "
          f"D={table.shape[1]}; max |vectorised - loop| on {len(pick)} sampled units: {diff:.2e}")
    print(f"{'vectorised':12s} {n_units / tv:12,.0f} units/s  ({tv:.3f} s for all {n_units} units, best of 3)")
    print(f"{'loop':12s} {len(pick) / tl:12,.0f} units/s  ({tl:.3f} s for {len(pick)} units)   "
          f"vectorised is {(n_units / tv) / (len(pick) / tl):.1f}x faster")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--n-tasks", type=int, default=20)
    ap.add_argument("--k-expl", type=int, default=9)
    ap.add_argument("--tau", type=float, default=0.16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs for the vectorised scorer")
    ap.add_argument("--atlas", default=None, help="also time the scorer on this atlas (offline-backend cache)")
    ap.add_argument("--atlas-sample", type=int, default=1000, help="units of the atlas the loop is timed on")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, {os.cpu_count()} cores, "
          f"load average {load} (other processes slow both sides, the threaded vectorised side most)")
    table, top, bottom = synthetic(args.units, args.images, args.dim, args.k, args.seed)
    print(f"synthetic layer: {args.units} units, k={args.k}, {args.images} images, D={args.dim}, "
          f"N={args.n_tasks}, K={args.k_expl}, tau={args.tau}")

    def vectorised():
        res = score(table, build_tasks(top, bottom, args.n_tasks, args.k_expl), args.tau, device="cpu")
        return res.mis, res.accuracy

    t_vec, (mis_v, acc_v) = best_of(vectorised, args.repeat)
    tab, top_np, bottom_np = table.numpy(), top.numpy(), bottom.numpy()
    t_pair, (mis_p, acc_p) = best_of(lambda: loop_pairwise(tab, top_np, bottom_np, args.n_tasks, args.k_expl,
                                                           args.tau), 1)
    t_mv, (mis_m, acc_m) = best_of(lambda: loop_matvec(tab, top_np, bottom_np, args.n_tasks, args.k_expl,
                                                       args.tau), 1)
    for name, mis, acc in (("loop", mis_p, acc_p), ("loop-matvec", mis_m, acc_m)):
        dm = float(np.abs(mis - mis_v.double().numpy()).max())
        da = float(np.abs(acc - acc_v.double().numpy()).max())
        print(f"max |vectorised - {name}|: mis {dm:.2e}, accuracy {da:.2e}")
        assert dm <= 1e-6 and da <= 1e-6, f"vectorised and {name} scores differ"
    n = args.units
    print(f"MIS over units: mean {float(mis_v.mean()):.3f}, 5% {float(mis_v.quantile(0.05)):.3f}, "
          f"95% {float(mis_v.quantile(0.95)):.3f}")
    print(f"{'vectorised':12s} {n / t_vec:12,.0f} units/s  ({t_vec:.3f} s, best of {args.repeat})")
    print(f"{'loop':12s} {n / t_pair:12,.0f} units/s  ({t_pair:.3f} s)   vectorised is {t_pair / t_vec:.1f}x faster")
    print(f"{'loop-matvec':12s} {n / t_mv:12,.0f} units/s  ({t_mv:.3f} s)   vectorised is {t_mv / t_vec:.1f}x faster")
    if args.atlas:
        atlas_part(args.atlas, args.n_tasks, args.k_expl, args.tau, args.atlas_sample, args.seed)


if __name__ == "__main__":
    main()
