"""``LayerState``: streaming top-k / bottom-k exemplars and running statistics of one layer's units.

Memory is O(units · (k + merge_every)). The order is total: by value, ties broken by a seeded pseudo-random
permutation of the sample ids (``tie_rank``; the bottom direction by the reversed permutation), so the result does
not depend on how the stream is cut into batches, merges or checkpoints, and tied exemplars (dead ReLU units,
sparse features: hundreds of exact zeros) are a seeded random draw from the tied samples instead of the lowest ids,
which follow the dataset's folder order; a unit's top and bottom lists draw its tied samples from opposite ends.
Each exemplar is one int64 key that packs a monotone integer image of the float32 value (high 32 bits) with the
inverted tie rank of the sample (low 32 bits): selecting is one unsorted ``topk`` over keys, and value and id
decode from the key (the permutation is a bijection of 32-bit integers with a closed-form inverse).
Reduced activations are buffered and merged every ``merge_every`` samples, so the merge costs about
(k + merge_every) / merge_every key operations per unit and image instead of (k + B) / B per batch.
Mean and std come from float64 sums of values shifted by the first sample's activations (robust to a large
mean; exact, hence batch-invariant, whenever the activations are exactly representable).
"""
from __future__ import annotations

import torch

from unitlens.errors import BadInput

_LOW = 0xFFFFFFFF
_MAGNITUDE = 0x7FFFFFFF
_EMPTY = -(1 << 63)  # below every real key
MAX_SAMPLES = 1 << 31  # ids are stored as int32
# murmur3's 32-bit finaliser: xor-shifts and odd multipliers, each step invertible modulo 2**32
_M1, _M2 = 0x85EBCA6B, 0xC2B2AE35
_M1_INV, _M2_INV = pow(_M1, -1, 1 << 32), pow(_M2, -1, 1 << 32)
_GOLDEN = 0x9E3779B9  # seed offsets spread over the 32-bit range


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2**32 for int64 x in [0, 2**32), without overflowing int64 (c split into 16-bit halves)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _LOW


def tie_rank(ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The seeded pseudo-random rank (a 32-bit integer) that breaks ties between equal activations of samples
    ``ids``: a bijection of [0, 2**32), so distinct ids never share a rank."""
    x = (ids.to(torch.int64) + (seed * _GOLDEN)) & _LOW
    x = x ^ (x >> 16)
    x = _mul32(x, _M1)
    x = x ^ (x >> 13)
    x = _mul32(x, _M2)
    return x ^ (x >> 16)


def rank_ids(ranks: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Inverse of ``tie_rank``: the sample ids of 32-bit ranks."""
    x = ranks.to(torch.int64) & _LOW
    x = x ^ (x >> 16)
    x = _mul32(x, _M2_INV)
    x = x ^ (x >> 13) ^ (x >> 26)
    x = _mul32(x, _M1_INV)
    x = x ^ (x >> 16)
    return (x - (seed * _GOLDEN)) & _LOW


def _flip(bits: torch.Tensor) -> torch.Tensor:
    """Map float32 bit patterns (as int32) to ints with the same order; the map is its own inverse."""
    return bits ^ ((bits >> 31) & _MAGNITUDE)


def encode(values: torch.Tensor, ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """int64 keys ordered like (value, -tie_rank(id)): larger value first, then lower tie rank. No NaN allowed."""
    return encode_ranked(values, tie_rank(ids, seed))


def encode_ranked(values: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """``encode`` with the tie ranks of the ids given (computed once per batch, broadcast over the units)."""
    bits = _flip((values.float() + 0.0).view(torch.int32))  # + 0.0 turns -0.0 into +0.0
    return (bits.to(torch.int64) << 32) | (_LOW - ranks)


def key_values(keys: torch.Tensor) -> torch.Tensor:
    """The float32 activations of ``keys`` (no ids: the cheap half of ``decode``)."""
    return _flip((keys >> 32).to(torch.int32)).view(torch.float32)


def decode(keys: torch.Tensor, seed: int = 0, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``encode``: (values float32, ids int64); ``reverse`` for keys encoded with reversed ranks
    (``_LOW - tie_rank``, the bottom direction)."""
    low = keys & _LOW
    return key_values(keys), rank_ids(low if reverse else _LOW - low, seed)


class LayerState:
    """Running record of one layer. ``update`` takes (B, C) activations and their (B,) sample ids;
    ``tie_seed`` seeds the permutation that orders samples of equal activation."""

    FIELDS = ("top_keys", "bottom_keys", "shift", "sum", "sumsq", "min", "max", "nonfinite", "count")

    def __init__(self, width: int, k: int, device: torch.device | str = "cpu", merge_every: int = 512,
                 tie_seed: int = 0):
        self.k, self.merge_every, self.tie_seed = k, merge_every, tie_seed
        f32, i64, f64 = torch.float32, torch.int64, torch.float64
        self.top_keys = torch.empty(width, 0, dtype=i64, device=device)
        self.bottom_keys = torch.empty(width, 0, dtype=i64, device=device)
        self.shift = torch.zeros(width, dtype=f64, device=device)
        self.sum = torch.zeros(width, dtype=f64, device=device)
        self.sumsq = torch.zeros(width, dtype=f64, device=device)
        self.min = torch.full((width,), float("inf"), dtype=f32, device=device)
        self.max = torch.full((width,), float("-inf"), dtype=f32, device=device)
        self.nonfinite = torch.zeros(width, dtype=i64, device=device)
        self.count = torch.zeros((), dtype=i64, device=device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pending_n = 0

    @property
    def width(self) -> int:
        return self.min.shape[0]

    def update(self, acts: torch.Tensor, ids: torch.Tensor) -> None:
        """Fold a batch in. NaN/inf values are counted per unit and kept out of exemplars and statistics."""
        acts = acts.float()
        ids = ids.to(device=acts.device, dtype=torch.int64)
        if acts.ndim != 2 or acts.shape[1] != self.width or acts.shape[0] != ids.shape[0]:
            raise BadInput(f"expected ({ids.shape[0]}, {self.width}) activations, got {tuple(acts.shape)}")
        finite = torch.isfinite(acts)
        all_finite = bool(finite.all())
        if not all_finite:
            self.nonfinite += (~finite).sum(0)
        clean = (acts if all_finite else torch.where(finite, acts, 0.0)).double()
        if int(self.count) == 0:
            self.shift = clean[0].clone()
        centred = clean - self.shift
        if not all_finite:
            centred = torch.where(finite, centred, 0.0)
        self.sum += centred.sum(0)
        self.sumsq += (centred * centred).sum(0)
        low = acts if all_finite else torch.where(finite, acts, float("inf"))
        high = acts if all_finite else torch.where(finite, acts, float("-inf"))
        self.min = torch.minimum(self.min, low.amin(0))
        self.max = torch.maximum(self.max, high.amax(0))
        self.count += acts.shape[0]
        self._pending.append((acts if all_finite else acts.masked_fill(~finite, float("nan")), ids))
        self._pending_n += acts.shape[0]
        if self._pending_n >= self.merge_every:
            self.flush()

    def flush(self) -> None:
        """Merge buffered activations into the top-k and bottom-k keys."""
        if not self._pending:
            return
        acts = torch.cat([a for a, _ in self._pending])  # (M, C); NaN marks non-finite values
        ids = torch.cat([i for _, i in self._pending])
        self._pending, self._pending_n = [], 0
        ranks = tie_rank(ids, self.tie_seed)  # once per merge, shared by every unit
        self.top_keys = self._merge(self.top_keys, acts, ranks)
        # the bottom direction breaks ties by the reversed rank: a unit's tied samples (the zeros of a sparse or
        # dead unit) fill its top list from one end of the permutation and its bottom list from the other, so the
        # two lists share no tied sample while there are enough of them
        self.bottom_keys = self._merge(self.bottom_keys, -acts, _LOW - ranks)

    def _merge(self, keys: torch.Tensor, acts: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
        """The k largest (value, -tie rank) keys of ``keys`` and the (M, C) candidates ``acts`` of samples with tie
        ranks ``ranks`` (M,).

        Until a unit holds k entries every candidate competes. After that only candidates at or above the
        unit's current k-th value can enter: those few are found with one comparison per candidate and
        encoded; the final ``topk`` over keys settles ties by id, so the result is exact.
        """
        width = self.width
        if keys.shape[1] < self.k:
            filled = acts.masked_fill(torch.isnan(acts), float("-inf")).T
            cand = torch.cat([keys, encode_ranked(filled, ranks.expand(width, -1))], dim=1)
            return cand.topk(min(self.k, cand.shape[1]), dim=1, sorted=False).values
        threshold = key_values(keys.amin(dim=1))
        # transposing the boolean mask makes nonzero list survivors grouped by unit; NaN never passes
        units, rows = (acts >= threshold).T.contiguous().nonzero(as_tuple=True)
        if rows.numel() == 0:
            return keys
        counts = torch.bincount(units, minlength=width)
        slot = torch.arange(units.numel(), device=units.device) - (counts.cumsum(0) - counts)[units]
        new = torch.full((width, int(counts.max())), _EMPTY, dtype=torch.int64, device=keys.device)
        new[units, slot] = encode_ranked(acts[rows, units], ranks[rows])
        return torch.cat([keys, new], dim=1).topk(self.k, dim=1, sorted=False).values

    def exemplars(self) -> dict[str, torch.Tensor]:
        """top_vals/top_ids in descending order, bottom_vals/bottom_ids ascending; each (C, k)."""
        self.flush()
        top_vals, top_ids = decode(self.top_keys.sort(dim=1, descending=True).values, self.tie_seed)
        neg_bottom, bottom_ids = decode(self.bottom_keys.sort(dim=1, descending=True).values, self.tie_seed,
                                        reverse=True)
        return {"top_ids": top_ids, "top_vals": top_vals, "bottom_ids": bottom_ids, "bottom_vals": -neg_bottom + 0.0}

    def stats(self) -> dict[str, torch.Tensor]:
        """Per-unit n, mean, std (population), min, max, nonfinite, over the finite values seen."""
        n = (self.count - self.nonfinite).double().clamp(min=1)
        mean_c = self.sum / n
        var = (self.sumsq / n - mean_c * mean_c).clamp(min=0)
        return {"n": self.count - self.nonfinite, "mean": (self.shift + mean_c), "std": var.sqrt(),
                "min": self.min, "max": self.max, "nonfinite": self.nonfinite}

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.flush()
        return {f: getattr(self, f).detach().cpu() for f in self.FIELDS}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], k: int, device="cpu",
                        merge_every: int = 512, tie_seed: int = 0) -> "LayerState":
        self = cls(state["min"].shape[0], k, device, merge_every, tie_seed)
        for f in cls.FIELDS:
            setattr(self, f, state[f].to(device))
        return self
