"""Units labelled per second by each labeller and by the faithfulness AUC, against straightforward per-unit
implementations, on the same synthetic probe set in the same run; prints the ratio and the largest difference.

Baselines (each loops over units, as a direct reading of the papers would):

- AUC (``evaluate-labels``, INVERT's atoms): sklearn ``roc_auc_score`` per unit and concept;
- semanticlens: per unit, the alignment with every concept probe (a dot product each);
- clip-dissect: per unit, sort its activations and sum the soft-WPMI log terms over its top images (numpy);
- invert: per unit, the beam search with sklearn AUC per candidate formula (on ``--invert-units`` units, since it
  is slow), checked against ours on the same units.

    python benchmarks/label_speed.py [--units 320] [--images 800] [--concepts 22]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from unitlens.probe.clip_dissect import in_top_probability, soft_wpmi
from unitlens.probe.defaults import BEAM, LENGTH, TOP_K
from unitlens.probe.invert import beam_search
from unitlens.probe.ranking import auc_by_ranks, row_ranks


def timed(fn, repeats: int = 3):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def auc_loop(acts: np.ndarray, Y: np.ndarray) -> np.ndarray:
    return np.array([[roc_auc_score(Y[:, f], a) for f in range(Y.shape[1])] for a in acts])


def wpmi_loop(acts: np.ndarray, sims: np.ndarray, top_k: int) -> np.ndarray:
    p = np.exp(10 * sims)
    p /= p.sum(1, keepdims=True)
    p_in = in_top_probability(acts.shape[1], top_k).numpy()
    rest = (acts.shape[1] - len(p_in)) * np.log1p(1e-7)
    given = []
    for a in acts:
        top = np.argsort(-a, kind="stable")[: len(p_in)]
        given.append(np.log(p_in[:, None] * p[top] + (1 - p_in)[:, None] + 1e-7).sum(0) + rest)
    given = np.array(given)
    prior = np.log(np.exp(given - given.max(0)).mean(0)) + given.max(0)
    return given - prior


def invert_loop(acts: np.ndarray, atoms: np.ndarray, length: int, beam: int, lo: int, hi: int) -> np.ndarray:
    """The reference algorithm per unit: candidates as Python objects, sklearn AUC each."""
    best = []
    cols = [atoms[:, j] for j in range(atoms.shape[1])]
    for a in acts:
        pool = {}
        for c in cols:
            if lo <= c.sum() <= hi:
                pool.setdefault(c.tobytes(), (roc_auc_score(c, a), 1, c))
        current = sorted(pool.values(), key=lambda t: (-t[0], t[1]))[:beam]
        for step in range(2, length + 1):
            pool = {v[2].tobytes(): v for v in current}
            for _, _, f in current:
                for c in cols:
                    for new in (f & c, f | c):
                        if lo <= new.sum() <= hi and new.tobytes() not in pool:
                            pool[new.tobytes()] = (roc_auc_score(new, a), step, new)
            current = sorted(pool.values(), key=lambda t: (-t[0], t[1]))[:beam]
        best.append(current[0][0])
    return np.array(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=320)
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--concepts", type=int, default=22)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--invert-units", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    U, n, K = args.units, args.images, args.concepts
    member = np.zeros((n, K), dtype=bool)
    member[np.arange(n), rng.integers(0, K, n)] = True
    acts = (rng.normal(size=(U, n)) + member[:, rng.integers(0, K, U)].T * rng.uniform(0, 2, (U, 1))).astype(np.float32)
    theta = torch.nn.functional.normalize(torch.randn(U, args.dim), dim=-1)
    probes = torch.nn.functional.normalize(torch.randn(K, args.dim), dim=-1)
    sims = rng.uniform(0.1, 0.4, (n, K))
    rows = []

    t_loop, ref = timed(lambda: auc_loop(acts, member), repeats=1)
    t_ours, ours = timed(lambda: auc_by_ranks(row_ranks(acts), member))
    rows.append(("AUC, all concepts (evaluate)", U / t_loop, U / t_ours, float(np.abs(ref - ours).max())))

    t_loop, ref = timed(lambda: np.array([[float(t @ p) for p in probes] for t in theta]), repeats=1)
    t_ours, ours = timed(lambda: (theta @ probes.T).numpy())
    rows.append(("semanticlens (a per concept)", U / t_loop, U / t_ours, float(np.abs(ref - ours).max())))

    t_loop, ref = timed(lambda: wpmi_loop(acts.astype(np.float64), sims, TOP_K), repeats=1)
    t_ours, ours = timed(lambda: soft_wpmi(torch.from_numpy(acts), torch.from_numpy(sims)).numpy())
    rows.append(("clip-dissect (soft-WPMI)", U / t_loop, U / t_ours, float(np.abs(ref - ours).max())))

    atoms = np.concatenate([member, ~member], 1)
    lo, hi = 2, n // 2
    sub = acts[: args.invert_units].astype(np.float64)
    t_loop, ref = timed(lambda: invert_loop(sub, atoms, LENGTH, BEAM, lo, hi), repeats=1)
    t_ours, ours = timed(lambda: beam_search(row_ranks(acts), atoms, LENGTH, BEAM, lo, hi).auc, repeats=1)
    rows.append((f"invert (L={LENGTH}, beam {BEAM})", len(sub) / t_loop, U / t_ours,
                 float(np.abs(ref - ours[: len(sub)]).max())))

    print(f"{U} units, {n} probe images, {K} concepts (torch threads: {torch.get_num_threads()})")
    print(f"{'what':<30} {'baseline u/s':>13} {'ours u/s':>11} {'ratio':>8} {'max diff':>9}")
    for what, base, our, diff in rows:
        print(f"{what:<30} {base:>13,.1f} {our:>11,.1f} {our / base:>7.1f}x {diff:>9.1e}")


if __name__ == "__main__":
    main()
