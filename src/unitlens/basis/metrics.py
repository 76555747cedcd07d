"""``fit_metrics(encoder, samples)``: how well a basis describes the activations it was fitted on, in one pass.

- ``r2``: reconstruction R² = 1 − Σ‖x − x̂‖² / Σ‖x − mean‖² (pooled over channels), where the basis has a decoder;
- ``explained_variance``: 1 − Σ_c Var(x_c − x̂_c) / Σ_c Var(x_c) (ignores a constant offset of the reconstruction);
- ``dead_features``: features that are 0 on every sample (and their share);
- ``mean_active``: features ≠ 0 per sample, on average (L0).

Sums are float64. The metrics are measured on the fitting samples (the atlas's dataset), not held-out data.
"""
from __future__ import annotations

import torch

from unitlens.basis.activations import Samples
from unitlens.basis.defaults import ENCODE_FLOATS
from unitlens.basis.encoder import Encoder
from unitlens.errors import BasisError
from unitlens.runtime import Progress, pick_device


def fit_metrics(encoder: Encoder, samples: Samples, device=None, progress: bool = True) -> dict:
    """The fit metrics of ``encoder`` over every sample (see the module docstring); raises ``BasisError`` if the
    basis gives NaN or inf features."""
    device = pick_device(device)
    enc = encoder.to(device)
    F = encoder.features
    n, sse, active = 0, 0.0, 0.0
    ever = torch.zeros(F, dtype=torch.bool, device=device)
    r_sum = torch.zeros(samples.width, dtype=torch.float64, device=device)
    r_sq = torch.zeros(samples.width, dtype=torch.float64, device=device)
    rows = max(1, ENCODE_FLOATS // max(F, samples.width))  # bounded memory for the features of a chunk
    with Progress("fit metrics", samples.n, progress, unit="sample") as bar, torch.inference_mode():
        for x in (part for chunk in samples.chunks("fit metrics") for part in chunk.split(rows)):
            x = x.to(device)
            f = enc.encode(x)
            if not bool(torch.isfinite(f).all()):
                raise BasisError("the fitted basis gives NaN or inf features, so it was not stored; for an SAE lower "
                                 "--lr (or raise --epochs), for a user matrix check its values")
            on = f != 0
            ever |= on.any(0)
            active += float(on.sum())
            n += x.shape[0]
            x_hat = enc.reconstruct(f)
            if x_hat is not None:
                r = (x - x_hat).double()
                sse += float((r * r).sum())
                r_sum += r.sum(0)
                r_sq += (r * r).sum(0)
            bar.advance(x.shape[0])
    total_var = float(samples.var.sum())
    dead = int((~ever).sum())
    out = {"n_samples": n, "features": F, "dead_features": dead, "dead_share": dead / F, "mean_active": active / n,
           "r2": float("nan"), "explained_variance": float("nan")}
    if encoder.decoder is not None and total_var > 0:
        r_var = (r_sq / n - (r_sum / n) ** 2).clamp_min(0)
        out["r2"] = 1 - sse / (n * total_var)
        out["explained_variance"] = 1 - float(r_var.sum()) / total_var
    return out
