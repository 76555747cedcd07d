"""The units whose lens vectors θ are closest (cosine) to given units, within one lens store.

The explorer's "most similar units" lists: one matrix product of the query vectors with the normalised θ of each
layer, constant units left out, ranked by cosine with ties broken by layer order, then unit (as
``LensStore.search`` ranks).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def nearest_units(vectors: Callable[[str], tuple[torch.Tensor, torch.Tensor]], queries: torch.Tensor,
                  layers: list[str], top: int,
                  exclude: tuple[str, list[int]] | None = None) -> list[list[tuple[str, int, float]]]:
    """For each row of ``queries`` (Q, D; normalised), the ``top`` most similar units of ``layers`` as
    (layer, unit, cosine). ``vectors(layer)`` gives a layer's non-constant units and their normalised θ (U', D);
    ``exclude`` = (layer, units): query q never returns ``units[q]`` of that layer (itself)."""
    if queries.ndim == 1:
        queries = queries[None]
    Q = queries.shape[0]
    cand_cos, cand_layer, cand_unit = [], [], []
    for order, name in enumerate(layers):
        keep, V = vectors(name)
        if len(keep) == 0:
            continue
        S = queries.float() @ V.T  # (Q, U')
        if exclude is not None and exclude[0] == name:
            position = {int(u): k for k, u in enumerate(keep.tolist())}
            for q, u in enumerate(exclude[1]):
                if int(u) in position:
                    S[q, position[int(u)]] = -np.inf
        k = min(top + 1, S.shape[1])  # one spare keeps ties at the cut deterministic below
        vals, idx = S.topk(k, dim=1)
        cand_cos.append(vals.double().numpy())
        cand_unit.append(keep[idx].numpy())
        cand_layer.append(np.full(idx.shape, order))
    if not cand_cos:
        return [[] for _ in range(Q)]
    cos, unit, layer = (np.concatenate(c, axis=1) for c in (cand_cos, cand_unit, cand_layer))
    out = []
    for q in range(Q):
        ranked = np.lexsort((unit[q], layer[q], -cos[q]))
        row = [(layers[int(layer[q, j])], int(unit[q, j]), float(cos[q, j])) for j in ranked
               if np.isfinite(cos[q, j])]
        out.append(row[:top])
    return out
