"""MIS scoring speed: unitlens's scorer against a per-unit, per-task loop, same data, same run, with and
without a busy core.

    .venv/bin/python benchmarks/mis_speed.py                              # synthetic layer
    .venv/bin/python benchmarks/mis_speed.py --atlas atlas/lite0-demo     # also a real atlas (after unitlens mis)

Synthetic layer (seeded): ``--units`` units whose k = 200 top/bottom exemplar ids are drawn from ``--images``
images with ``--dim``-dimensional L2-normalised float32 embeddings; N = 20 tasks, K = 9, τ = 0.16.

Baselines, written from the paper's equations with plain Python loops over units and tasks, timed on the
first ``--loop-units`` units (their cost is linear in the units):

- ``loop``: eq. (1) literally — for every unit, task and explanation one ``numpy.dot`` f(q, e), the mean as
  the aggregation a, then eqs. (2)–(5). The ratios are against this one;
- ``loop-matvec``: the same loops, but s(q, E) as one matrix-vector product per (query, explanation set);
- ``previous``: unitlens's earlier scorer (one weighted ``embedding_bag`` over whole embedding rows
  per chunk, torch's own threading), on the synthetic layer.

Every measurement is repeated ``--repeats`` times, the sides interleaved, and the medians are printed — once
as the machine is, once beside a busy loop (a subprocess spinning on one core), unless ``--no-busy``.
The loops must agree with unitlens to 1e-6 (MIS and accuracy); the script fails otherwise.

With ``--atlas`` it also scores every scorable unit of a real atlas as ``score_mis`` does (embeddings from
the atlas's ``offline`` cache, filled first if needed) and times its ``score`` stage — tasks from the exemplar
ids in memory and the scores, as the loop works from memory — against the ``loop`` on a random sample of
``--atlas-sample`` of those units; it also prints the ``tasks`` stage (reading and checking every exemplar
file), which the ratio leaves out.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

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


def previous(table: torch.Tensor, top: torch.Tensor, bottom: torch.Tensor, n_tasks: int, k_expl: int,
             tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The earlier scorer: ē⁺ − ē⁻ of every task as one weighted bag over whole rows, two dot products,
    chunks of 24 MB of intermediates, torch's own threads."""
    tasks = build_tasks(top, bottom, n_tasks, k_expl)
    c_all, n, k = tasks.n_units, n_tasks, k_expl
    step = max(1, min(c_all, 24 * 2**20 // (3 * n * table.shape[1] * table.element_size())))
    weights = torch.cat([torch.full((k,), 1.0 / k), torch.full((k,), -1.0 / k)]).to(table.dtype)
    margins = []
    for a in range(0, c_all, step):
        t = tasks[a:a + step]
        c = t.n_units
        bags = torch.cat([t.pos_expl.reshape(c * n, k), t.neg_expl.reshape(c * n, k)], 1)
        e_diff = F.embedding_bag(bags, table, mode="sum", per_sample_weights=weights.expand(c * n, 2 * k).contiguous())
        q_pos = F.embedding(t.pos_query.reshape(c * n), table)
        q_neg = F.embedding(t.neg_query.reshape(c * n), table)
        margins.append((torch.linalg.vecdot(q_pos, e_diff) - torch.linalg.vecdot(q_neg, e_diff)).view(c, n))
    m = torch.cat(margins)
    return torch.sigmoid(m / tau).mean(1), (m > 0).float().mean(1)


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


class Busy:
    """A subprocess spinning on one core for the duration of a ``with`` block."""

    def __enter__(self) -> "Busy":
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def medians(sides: dict, repeats: int) -> tuple[dict, dict]:
    """Run every side ``repeats`` times, interleaved; median seconds and the last output of each."""
    times: dict = {name: [] for name in sides}
    outs: dict = {}
    for _ in range(repeats):
        for name, fn in sides.items():
            t, outs[name] = timed(fn)
            times[name].append(t)
    return {name: statistics.median(v) for name, v in times.items()}, outs


def check(name: str, mis, acc, mis_ref, acc_ref) -> str:
    dm = float(np.abs(np.asarray(mis, dtype=float) - np.asarray(mis_ref, dtype=float)).max())
    da = float(np.abs(np.asarray(acc, dtype=float) - np.asarray(acc_ref, dtype=float)).max())
    assert dm <= 1e-6 and da <= 1e-6, f"unitlens and {name} scores differ: mis {dm:.2e}, accuracy {da:.2e}"
    return f"{name} mis {dm:.1e} acc {da:.1e}"


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def synthetic_part(args, condition: str) -> list[dict]:
    table, top, bottom = synthetic(args.units, args.images, args.dim, args.k, args.seed)
    n, m = args.units, min(args.loop_units, args.units)
    tab, top_np, bottom_np = table.numpy(), top[:m].numpy(), bottom[:m].numpy()

    def ours():
        res = score(table, build_tasks(top, bottom, args.n_tasks, args.k_expl), args.tau, device="cpu")
        return res.mis, res.accuracy

    sides = {
        "unitlens": ours,
        "previous": lambda: previous(table, top, bottom, args.n_tasks, args.k_expl, args.tau),
        "loop": lambda: loop_pairwise(tab, top_np, bottom_np, args.n_tasks, args.k_expl, args.tau),
        "loop-matvec": lambda: loop_matvec(tab, top_np, bottom_np, args.n_tasks, args.k_expl, args.tau),
    }
    sec, out = medians(sides, args.repeats)
    mis, acc = (x.double().numpy() for x in out["unitlens"])
    notes = [check(name, *out[name], mis[:m], acc[:m]) for name in ("loop", "loop-matvec")]
    notes.append(check("previous", *(x.double().numpy() for x in out["previous"]), mis, acc))
    print(f"  [{condition}] synthetic: max |unitlens - x|: " + "; ".join(notes))
    rate = {"unitlens": n / sec["unitlens"], "previous": n / sec["previous"], "loop": m / sec["loop"],
            "loop-matvec": m / sec["loop-matvec"]}
    case = f"synthetic ({n:,} units, {args.images:,} images, D={args.dim})"
    return [{"condition": condition, "case": case, "side": side, "units/s": rate[side],
             "x loop": rate[side] / rate["loop"]} for side in ("unitlens", "previous", "loop-matvec", "loop")]


def atlas_part(args, condition: str) -> list[dict]:
    from unitlens.atlas import Atlas
    from unitlens.backends import EmbeddingCache, load_backend
    from unitlens.mis.options import MISOptions
    from unitlens.mis.scoring import STATUS_SCORED, score_mis

    backend = load_backend("offline", device="cpu")
    options = MISOptions(n_tasks=args.n_tasks, k_expl=args.k_expl, tau=args.tau, device="cpu", write=False)
    first = score_mis(args.atlas, options, backend=backend, progress=False)  # fills the embedding cache if needed
    scored = first.frame[first.frame["status"] == STATUS_SCORED].reset_index(drop=True)
    n_units = len(scored)
    pick = torch.randperm(n_units, generator=torch.Generator().manual_seed(args.seed))[:args.atlas_sample].numpy()
    atlas = Atlas(args.atlas)
    need = args.n_tasks * (args.k_expl + 1)
    ex = {name: atlas.exemplars(name) for name in scored.loc[pick, "layer"].unique()}
    chosen = list(zip(scored.loc[pick, "layer"], scored.loc[pick, "unit"]))
    top = np.stack([ex[layer].top_ids[u, :need].numpy() for layer, u in chosen])
    bottom = np.stack([ex[layer].bottom_ids[u, :need].numpy() for layer, u in chosen])
    ids = np.unique(np.concatenate([top.ravel(), bottom.ravel()]))
    table = EmbeddingCache(atlas, backend).get(torch.from_numpy(ids), progress=False).numpy()
    rows_top, rows_bottom = np.searchsorted(ids, top), np.searchsorted(ids, bottom)
    runs: list = []

    def ours():
        runs.append(score_mis(args.atlas, options, backend=backend, progress=False))

    score_s, tasks_s, loop_s = [], [], []
    for _ in range(args.repeats):
        ours()
        score_s.append(runs[-1].seconds["score"])
        tasks_s.append(runs[-1].seconds["tasks"])
        t, (mis_l, acc_l) = timed(lambda: loop_pairwise(table, rows_top, rows_bottom, args.n_tasks, args.k_expl,
                                                        args.tau))
        loop_s.append(t)
    ts, tt, tl = (statistics.median(v) for v in (score_s, tasks_s, loop_s))
    note = check("loop", mis_l, acc_l, scored.loc[pick, "mis"].to_numpy(), scored.loc[pick, "mis_accuracy"].to_numpy())
    print(f"  [{condition}] atlas: {first.frame['layer'].nunique()} layers, {n_units:,} scored units, "
          f"{first.n_images:,} images, D={table.shape[1]}; max |unitlens - x| on {len(pick)} sampled units: {note}; "
          f"tasks stage (read + check exemplars, not in the ratio) {tt:.3f} s, score stage {ts:.3f} s")
    case = f"atlas ({n_units:,} units, {first.n_images:,} images, D={table.shape[1]})"
    loop_rate = len(pick) / tl
    return [{"condition": condition, "case": case, "side": "unitlens", "units/s": n_units / ts,
             "x loop": n_units / ts / loop_rate},
            {"condition": condition, "case": case, "side": "unitlens incl. tasks stage",
             "units/s": n_units / (ts + tt), "x loop": n_units / (ts + tt) / loop_rate},
            {"condition": condition, "case": case, "side": "loop", "units/s": loop_rate, "x loop": 1.0}]


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
    ap.add_argument("--repeats", type=int, default=5, help="medians over this many interleaved runs")
    ap.add_argument("--loop-units", type=int, default=300, help="units of the synthetic layer the loops run on")
    ap.add_argument("--atlas", default=None, help="also time the scorer on this atlas (offline-backend cache)")
    ap.add_argument("--atlas-sample", type=int, default=500, help="units of the atlas the loop is timed on")
    ap.add_argument("--no-busy", action="store_true", help="skip the run beside a busy core")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, {os.cpu_count()} cores; "
          f"N={args.n_tasks}, K={args.k_expl}, tau={args.tau}; medians of {args.repeats} interleaved runs")
    rows: list[dict] = []
    for condition in ("as is", "busy core") if not args.no_busy else ("as is",):
        with Busy() if condition == "busy core" else contextlib.nullcontext():
            before = load()
            rows += synthetic_part(args, condition)
            if args.atlas:
                rows += atlas_part(args, condition)
            print(f"  [{condition}] load average (1/5/15 min) before {before}, after {load()}")
    import pandas as pd

    table = pd.DataFrame(rows)
    table["units/s"] = table["units/s"].map(lambda v: f"{v:,.0f}")
    table["x loop"] = table["x loop"].map(lambda v: f"{v:.1f}")
    with pd.option_context("display.max_colwidth", None, "display.width", 200):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
