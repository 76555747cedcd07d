"""INVERT's batched beam search against a literal per-unit transcription of the reference implementation's search
(Bykov et al., ``explain_representation_test``), on the same synthetic probe sets.

The transcription keeps the reference's rules: atoms are the concepts and their negations, sorted by AUC; the
first beam is the ``beam`` best atoms whose share of the images is within [min_fraction, max_fraction]; each step
extends the first ``beam`` formulas by every atom with AND and OR, skips an extension true on no image, on every
image or on the same images as its parent, keeps it when its share is within the bounds, and keeps the ``beam``
best of the old beam and the extensions (a stable sort by AUC). Unlike ours it keeps two formulas true on the same
images (``a OR b`` from the beam entry ``a``, ``b OR a`` from ``b``) as two entries, so copies can push a better
formula out of its beam. Ours runs with ``min_count=1`` here (its default is 2 images), so the two differ only in
that merge and in the order of formulas of equal AUC.

Prints, per probe set, the share of units whose label has other images than the reference's, and how many of
those have a higher, equal and lower AUC than the reference's label (lower would be a bug).

    python scripts/invert_reference_check.py [--units 300] [--images 400] [--concepts 12] [--seeds 0 1 2] [--single]
"""
from __future__ import annotations

import argparse
import math

import numpy as np

from unitlens.probe.formulas import indicator
from unitlens.probe.invert import beam_search, terms_of
from unitlens.probe.ranking import row_ranks


def auc(ranks: np.ndarray, ind: np.ndarray) -> float:
    c, n = int(ind.sum()), len(ind)
    return (float(ranks[ind].sum()) - c * (c + 1) / 2) / (c * (n - c))


def reference(ranks: np.ndarray, member: np.ndarray, length: int, beam: int, lo: float, hi: float) -> np.ndarray:
    """The indicator of the reference's best formula for one unit (``ranks``: its average ranks)."""
    n, K = member.shape
    atoms = [member[:, q] if i < K else ~member[:, q] for i, q in ((i, i % K) for i in range(2 * K))]
    scored = sorted(({"ind": a, "auc": auc(ranks, a), "share": a.mean()} for a in atoms),
                    key=lambda f: f["auc"], reverse=True)
    current = [f for f in scored if lo <= f["share"] <= hi][:beam]
    for _ in range(2, length + 1):
        grown = list(current)
        for parent in current[:beam]:
            for atom in scored:
                for new in (parent["ind"] & atom["ind"], parent["ind"] | atom["ind"]):
                    count = int(new.sum())
                    if count in (0, n) or np.array_equal(new, parent["ind"]):
                        continue
                    if lo <= count / n <= hi:
                        grown.append({"ind": new, "auc": auc(ranks, new), "share": count / n})
        current = sorted(grown, key=lambda f: f["auc"], reverse=True)[:beam]
    return current[0]["ind"]


def probe_set(rng: np.random.Generator, units: int, images: int, concepts: int,
              single: bool) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label images (each concept on 5-30 % of them), or one concept per image (``single``: a folder of
    concept folders), and units driven by a random formula of 1-3 concepts with noise of random strength, plus
    pure-noise units."""
    if single:
        member = np.zeros((images, concepts), dtype=bool)
        member[np.arange(images), rng.integers(0, concepts, images)] = True
    else:
        member = rng.random((images, concepts)) < rng.uniform(0.05, 0.3, concepts)
    acts = rng.normal(size=(units, images))
    for u in range(units * 3 // 4):
        ks = rng.choice(concepts, rng.integers(1, 4), replace=False)
        ind = member[:, ks[0]].copy()
        for k in ks[1:]:
            ind = ind & member[:, k] if rng.random() < 0.5 else ind | member[:, k]
        acts[u] += rng.uniform(0.3, 3.0) * ind
    return member, acts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--concepts", type=int, default=12)
    parser.add_argument("--length", type=int, default=3)
    parser.add_argument("--beam", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--single", action="store_true", help="one concept per image (a folder of concept folders)")
    args = parser.parse_args()
    print(f"{'seed':>4} {'units':>6} {'differ':>7} {'share':>7} {'higher':>7} {'equal':>6} {'lower':>6}")
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        member, acts = probe_set(rng, args.units, args.images, args.concepts, args.single)
        ranks = row_ranks(acts)
        names = [str(k) for k in range(args.concepts)]
        found = beam_search(ranks, np.concatenate([member, ~member], 1), args.length, args.beam, min_count=1,
                            max_count=math.floor(0.5 * args.images))
        higher = equal = lower = 0
        for u in range(args.units):
            ours = indicator(terms_of(found.atoms[u], found.ops[u], names), member, names)
            theirs = reference(ranks[u], member, args.length, args.beam, 0.0, 0.5)
            if np.array_equal(ours, theirs):
                continue
            a, b = auc(ranks[u], ours), auc(ranks[u], theirs)
            higher += a > b + 1e-12
            lower += a < b - 1e-12
            equal += abs(a - b) <= 1e-12
        differ = higher + equal + lower
        print(f"{seed:>4} {args.units:>6} {differ:>7} {differ / args.units:>6.1%} {higher:>7} {equal:>6} {lower:>6}")


if __name__ == "__main__":
    main()
