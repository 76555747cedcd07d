"""``holdout_split``: which probe images pick a label and which judge it, seeded and stratified.

Images are grouped by the exact set of concepts they show (a folder spec: by concept); each group of s images is
shuffled with the seed and round(fraction * s) of them (at least one and at most s - 1 when s >= 2) are held
out, so every concept with two or more images appears on both sides. A group of one image is used for
labelling only.
"""
from __future__ import annotations

import numpy as np

from unitlens.errors import BadInput


def holdout_split(membership: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labelling rows, held-out rows): disjoint, sorted, together every row of ``membership`` (N, K)."""
    if not 0 < fraction < 1:
        raise BadInput(f"the held-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    membership = np.asarray(membership, dtype=bool)
    rng = np.random.default_rng(seed)
    _, group = np.unique(membership, axis=0, return_inverse=True)
    group = group.reshape(-1)
    held = np.zeros(len(membership), dtype=bool)
    for g in range(int(group.max()) + 1 if len(group) else 0):
        rows = np.flatnonzero(group == g)
        s = len(rows)
        if s < 2:
            continue
        k = min(max(int(round(fraction * s)), 1), s - 1)
        held[rng.permutation(rows)[:k]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)
