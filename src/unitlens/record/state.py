"""``LayerState``: streaming top-k / bottom-k exemplars and running statistics of one layer's units.

Memory is O(units · k). The order is total: by value, ties broken by lower sample id, so the result does
not depend on how the stream is cut into batches or chunks. Both orders use one ``topk`` over int64 keys
that pack a monotone integer image of the float value (high 32 bits) and the inverted sample id (low 32).
Mean and std come from float64 sums of values shifted by the first sample's activations (robust to a large
mean; exact, hence batch-invariant, whenever the activations are exactly representable).
"""
from __future__ import annotations

import torch

_LOW = 0xFFFFFFFF
MAX_SAMPLES = 1 << 32


def _ordered_bits(values: torch.Tensor) -> torch.Tensor:
    """int64 whose order equals the float32 order of ``values`` (finite or infinite, no NaN)."""
    bits = (values.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(torch.int64)


def _keys(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return (_ordered_bits(values) << 32) | (_LOW - ids)


class LayerState:
    """Running record of one layer. ``update`` takes (B, C) activations and their (B,) sample ids."""

    FIELDS = ("top_vals", "top_ids", "bottom_vals", "bottom_ids", "shift", "sum", "sumsq", "min", "max",
              "nonfinite", "count")

    def __init__(self, width: int, k: int, device: torch.device | str = "cpu"):
        self.k = k
        f32, i64, f64 = torch.float32, torch.int64, torch.float64
        self.top_vals = torch.empty(width, 0, dtype=f32, device=device)
        self.top_ids = torch.empty(width, 0, dtype=i64, device=device)
        self.bottom_vals = torch.empty(width, 0, dtype=f32, device=device)
        self.bottom_ids = torch.empty(width, 0, dtype=i64, device=device)
        self.shift = torch.zeros(width, dtype=f64, device=device)
        self.sum = torch.zeros(width, dtype=f64, device=device)
        self.sumsq = torch.zeros(width, dtype=f64, device=device)
        self.min = torch.full((width,), float("inf"), dtype=f32, device=device)
        self.max = torch.full((width,), float("-inf"), dtype=f32, device=device)
        self.nonfinite = torch.zeros(width, dtype=i64, device=device)
        self.count = torch.zeros((), dtype=i64, device=device)

    @property
    def width(self) -> int:
        return self.min.shape[0]

    def update(self, acts: torch.Tensor, ids: torch.Tensor) -> None:
        """Fold a batch in. NaN/inf values are counted per unit and kept out of exemplars and statistics."""
        acts = acts.float()
        ids = ids.to(device=acts.device, dtype=torch.int64)
        if acts.ndim != 2 or acts.shape[1] != self.width or acts.shape[0] != ids.shape[0]:
            raise ValueError(f"expected ({ids.shape[0]}, {self.width}) activations, got {tuple(acts.shape)}")
        finite = torch.isfinite(acts)
        self.nonfinite += (~finite).sum(0)
        ids_t = ids.expand(self.width, -1)
        self.top_vals, self.top_ids = self._merge(
            self.top_vals, self.top_ids, torch.where(finite, acts, float("-inf")).T, ids_t, largest=True)
        self.bottom_vals, self.bottom_ids = self._merge(
            self.bottom_vals, self.bottom_ids, torch.where(finite, acts, float("inf")).T, ids_t, largest=False)
        clean = torch.where(finite, acts, 0.0).double()
        if int(self.count) == 0:
            self.shift = clean[0].clone()
        centred = torch.where(finite, clean - self.shift, 0.0)
        self.sum += centred.sum(0)
        self.sumsq += (centred * centred).sum(0)
        self.min = torch.minimum(self.min, torch.where(finite, acts, float("inf")).amin(0))
        self.max = torch.maximum(self.max, torch.where(finite, acts, float("-inf")).amax(0))
        self.count += acts.shape[0]

    def _merge(self, vals, ids, new_vals, new_ids, largest: bool):
        cand_vals = torch.cat([vals, new_vals], dim=1)
        cand_ids = torch.cat([ids, new_ids], dim=1)
        keys = _keys(cand_vals if largest else -cand_vals, cand_ids)
        idx = keys.topk(min(self.k, keys.shape[1]), dim=1, sorted=True).indices
        return cand_vals.gather(1, idx), cand_ids.gather(1, idx)

    def stats(self) -> dict[str, torch.Tensor]:
        """Per-unit n, mean, std (population), min, max, nonfinite, over the finite values seen."""
        n = (self.count - self.nonfinite).double().clamp(min=1)
        mean_c = self.sum / n
        var = (self.sumsq / n - mean_c * mean_c).clamp(min=0)
        return {"n": self.count - self.nonfinite, "mean": (self.shift + mean_c), "std": var.sqrt(),
                "min": self.min, "max": self.max, "nonfinite": self.nonfinite}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f: getattr(self, f).detach().cpu() for f in self.FIELDS}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], k: int, device="cpu") -> "LayerState":
        self = cls(state["min"].shape[0], k, device)
        for f in cls.FIELDS:
            setattr(self, f, state[f].to(device))
        return self
