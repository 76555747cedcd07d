"""Streaming per-unit statistics of relevance shares over samples (one layer): ``ShareStats`` for one explained
class, ``ClassShareStats`` per explained class (the predicted-class run).

A sample's share of unit k is share_k = R_k / Σ_j |R_j| over the units j of the same layer: how much of the
layer's relevance for that prediction the unit carries (signed; the |·| sum keeps negative evidence from inflating
the shares). Memory is O(units · top_n) or O(units · classes), never O(units · samples).
"""
from __future__ import annotations

import pandas as pd
import torch


def shares(rel: torch.Tensor) -> torch.Tensor:
    """(B, U) relevances -> (B, U) shares of the layer's absolute total per sample (0 where the total is 0)."""
    total = rel.abs().sum(1, keepdim=True)
    return torch.where(total > 0, rel / total.clamp_min(torch.finfo(rel.dtype).tiny), torch.zeros_like(rel))


class ShareStats:
    """Mean and max share, mean raw relevance and the ``top_n`` samples by share of every unit of one layer."""

    def __init__(self, n_units: int, top_n: int = 10):
        self.top_n = top_n
        self.sum = torch.zeros(n_units, dtype=torch.float64)
        self.max = torch.full((n_units,), -torch.inf, dtype=torch.float64)
        self.raw = torch.zeros(n_units, dtype=torch.float64)
        self.n = 0
        self.top_vals = torch.empty(n_units, 0, dtype=torch.float64)
        self.top_ids = torch.empty(n_units, 0, dtype=torch.int64)

    def add(self, rel: torch.Tensor, ids: list[int]) -> None:
        rel = rel.detach().double().cpu()
        s = shares(rel)
        self.sum += s.sum(0)
        self.max = torch.maximum(self.max, s.amax(0))
        self.raw += rel.sum(0)
        self.n += rel.shape[0]
        vals = torch.cat([self.top_vals, s.T], 1)
        idv = torch.cat([self.top_ids, torch.tensor(ids, dtype=torch.int64).expand(rel.shape[1], -1)], 1)
        v, j = vals.topk(min(self.top_n, vals.shape[1]), dim=1)
        self.top_vals, self.top_ids = v, idv.gather(1, j)

    def frame(self, layer: str) -> pd.DataFrame:
        n = max(self.n, 1)
        return pd.DataFrame({
            "layer": layer,
            "unit": range(len(self.sum)),
            "rel_mean": (self.sum / n).numpy(),
            "rel_max": self.max.numpy(),
            "rel_raw_mean": (self.raw / n).numpy(),
            "n_samples": self.n,
            "top_ids": [row for row in self.top_ids.tolist()],
        })


class ClassShareStats:
    """Share statistics of every unit of one layer, per explained class (each sample explains its own class)."""

    def __init__(self, n_units: int, classes: list[int]):
        self.classes = sorted(set(int(c) for c in classes))
        self.slot = {c: i for i, c in enumerate(self.classes)}
        K = len(self.classes)
        self.sum = torch.zeros(K, n_units, dtype=torch.float64)
        self.max = torch.full((K, n_units), -torch.inf, dtype=torch.float64)
        self.raw = torch.zeros(K, n_units, dtype=torch.float64)
        self.count = torch.zeros(K, dtype=torch.float64)

    def add(self, rel: torch.Tensor, targets: list[int]) -> None:
        rel = rel.detach().double().cpu()
        s = shares(rel)
        k = torch.tensor([self.slot[int(t)] for t in targets], dtype=torch.int64)
        self.sum.index_add_(0, k, s)
        self.raw.index_add_(0, k, rel)
        self.max.scatter_reduce_(0, k[:, None].expand_as(s), s, reduce="amax")
        self.count.index_add_(0, k, torch.ones(len(k), dtype=torch.float64))

    def frame(self, layer: str, top: int = 5) -> pd.DataFrame:
        """The ``top`` classes of every unit by mean share over the samples predicted as that class."""
        seen = self.count > 0
        mean = torch.where(seen[:, None], self.sum / self.count.clamp_min(1)[:, None], torch.tensor(-torch.inf,
                           dtype=torch.float64))
        k = min(top, int(seen.sum()))
        if k == 0:
            return pd.DataFrame(columns=["layer", "unit", "rank", "class_index", "rel_mean", "rel_max",
                                         "rel_raw_mean", "n_samples"])
        val, slot = mean.topk(k, dim=0)  # (k, U)
        U = self.sum.shape[1]
        units = torch.arange(U).expand(k, U)
        classes = torch.tensor(self.classes)[slot]
        return pd.DataFrame({
            "layer": layer,
            "unit": units.T.reshape(-1).numpy(),
            "rank": torch.arange(k).repeat(U).numpy(),
            "class_index": classes.T.reshape(-1).numpy(),
            "rel_mean": val.T.reshape(-1).numpy(),
            "rel_max": self.max.gather(0, slot).T.reshape(-1).numpy(),
            "rel_raw_mean": (self.raw.gather(0, slot) / self.count[slot].clamp_min(1)).T.reshape(-1).numpy(),
            "n_samples": self.count[slot].T.reshape(-1).numpy().astype("int64"),
        })
