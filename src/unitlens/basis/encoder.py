"""``Encoder``: how a basis turns a layer's activation vectors into feature activations, and back.

Every kind is stored in one form, f(x) = act((x − center) · Wᵀ + bias) for x of shape (N, C) and W of shape
(F, C), so recording a basis is one matrix product per batch. ``act`` is

- ``none``: f is linear in x (PCA, ICA, random directions, a plain user matrix);
- ``relu``: max(·, 0);
- ``topk``: ReLU, then all but the ``k`` largest features of each sample set to 0 (TopK SAEs);
- ``threshold``: ReLU, then features below their per-feature ``threshold`` set to 0 (JumpReLU SAEs, and
  BatchTopK SAEs at inference, which use one running threshold for all features);
- ``nmf``: the non-negative codes of x against the dictionary ``decoder`` (scikit-learn's
  ``non_negative_factorization`` with the dictionary fixed, as ``NMF.transform`` computes them); not linear.

``decoder`` (F, C) and ``decoder_bias`` (C,) map features back to activations, x̂ = f · decoder + decoder_bias,
where the kind has one (for the reconstruction metrics).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from unitlens.errors import BadInput

ACTIVATIONS = ("none", "relu", "topk", "threshold", "nmf")
_TENSORS = ("weight", "bias", "center", "threshold", "decoder", "decoder_bias")


@dataclass
class Encoder:
    """A basis's map from activation vectors (N, C) to features (N, F); see the module docstring."""

    weight: torch.Tensor  # (F, C)
    bias: torch.Tensor | None = None  # (F,)
    center: torch.Tensor | None = None  # (C,)
    activation: str = "none"
    k: int | None = None
    threshold: torch.Tensor | None = None  # (F,)
    decoder: torch.Tensor | None = None  # (F, C)
    decoder_bias: torch.Tensor | None = None  # (C,)
    options: dict = field(default_factory=dict)  # solver settings of the nmf activation

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise BadInput(f"unknown activation '{self.activation}'; choose one of {', '.join(ACTIVATIONS)}")
        F, C = self.weight.shape
        want = {"bias": (F,), "center": (C,), "threshold": (F,), "decoder": (F, C), "decoder_bias": (C,)}
        for name, shape in want.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise BadInput(f"encoder {name} has shape {tuple(value.shape)}; a ({F}, {C}) weight needs {shape}")
        if self.activation == "topk" and not (self.k and 0 < self.k <= F):
            raise BadInput(f"a topk encoder needs 1 <= k <= {F} features, got k={self.k}")
        if self.activation == "threshold" and self.threshold is None:
            raise BadInput("a threshold encoder needs its thresholds")
        if self.activation == "nmf" and self.decoder is None:
            raise BadInput("an nmf encoder needs its dictionary (decoder)")

    @property
    def features(self) -> int:
        return self.weight.shape[0]

    @property
    def channels(self) -> int:
        return self.weight.shape[1]

    @property
    def linear(self) -> bool:
        """Whether f is a linear (affine) function of x."""
        return self.activation == "none"

    def to(self, device: torch.device | str) -> "Encoder":
        moved = {n: getattr(self, n).to(device) for n in _TENSORS if getattr(self, n) is not None}
        return replace(self, **moved)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) activations -> (N, F) features (float32, on ``x``'s device)."""
        x = x.float()
        if self.activation == "nmf":
            return self._nmf_codes(x)
        if self.center is not None:
            x = x - self.center
        pre = x @ self.weight.T
        if self.bias is not None:
            pre = pre + self.bias
        if self.activation == "none":
            return pre
        codes = torch.relu(pre)
        if self.activation == "topk":
            assert self.k is not None  # checked on construction
            top = torch.topk(codes, self.k, dim=-1)
            return torch.zeros_like(codes).scatter(-1, top.indices, top.values)
        if self.activation == "threshold":
            assert self.threshold is not None  # checked on construction
            return codes * (codes >= self.threshold)
        return codes

    def _nmf_codes(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np
        from sklearn.decomposition import non_negative_factorization

        assert self.decoder is not None  # an NMF basis always stores its components
        H = self.decoder.detach().cpu().double().numpy()
        W, _, _ = non_negative_factorization(x.detach().cpu().double().numpy(), H=H, n_components=H.shape[0],
                                             update_H=False, **self.options)
        return torch.from_numpy(np.ascontiguousarray(W)).float().to(x.device)

    def reconstruct(self, f: torch.Tensor) -> torch.Tensor | None:
        """(N, F) features -> (N, C) reconstructed activations, or None when the basis has no decoder."""
        if self.decoder is None:
            return None
        x = f @ self.decoder
        return x + self.decoder_bias if self.decoder_bias is not None else x

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to store (safetensors); ``activation``, ``k`` and ``options`` go into the metadata."""
        return {n: getattr(self, n).detach().float().cpu().contiguous() for n in _TENSORS
                if getattr(self, n) is not None}

    def settings(self) -> dict:
        return {"activation": self.activation, "k": self.k, "options": self.options}

    @classmethod
    def from_stored(cls, tensors: dict[str, torch.Tensor], settings: dict) -> "Encoder":
        return cls(**{n: tensors.get(n) for n in _TENSORS}, activation=settings["activation"],  # type: ignore[arg-type]
                   k=settings.get("k"), options=settings.get("options") or {})

    def nonfinite(self) -> list[str]:
        """The names of the tensors that hold NaN or inf (a diverged fit)."""
        present = {n: getattr(self, n) for n in _TENSORS if getattr(self, n) is not None}
        return [n for n, t in present.items() if not bool(torch.isfinite(t).all())]


def least_squares_decoder(weight: torch.Tensor) -> torch.Tensor:
    """The decoder (F, C) that maps linear features f = x · Wᵀ back to the closest x: the pseudo-inverse of Wᵀ."""
    return torch.linalg.pinv(weight.double().T).float()
