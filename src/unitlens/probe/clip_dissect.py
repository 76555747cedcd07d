"""The ``clip-dissect`` labeller: soft-WPMI between a unit's activation ranking over the probe images and the
backend's image–concept similarities (Oikarinen & Weng, ICLR 2023).

With P (n, M) the cosine similarities of the n probe images and M concepts in the backend's space:

- p(t_m | x_i) = softmax over m of ``scale`` · P_im;
- unit k's soft top set B_k: its images ranked by activation (ties: lower image first); rank r = 0, 1, ... gets
  p(x ∈ B_k) = p_start − (r / top_k)(p_start − p_end) for r < top_k and 0 beyond;
- log p(t_m | B_k) = Σ_i log(p(x_i ∈ B_k) p(t_m | x_i) + 1 − p(x_i ∈ B_k) + min_prob);
- log p(t_m) = log of the mean over the layer's units of p(t_m | B_k);
- soft-WPMI(k, m) = log p(t_m | B_k) − λ log p(t_m); the label is the concept of the largest, and that is the
  score.

All units of a layer at once: one gather of the top-k rows of log-terms per unit, no loop over images.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from unitlens.backends import as_backend
from unitlens.errors import BadInput
from unitlens.lens.defaults import DEFAULT_LENS_BACKEND
from unitlens.lens.probes import TEMPLATES
from unitlens.lens.store import LensStore
from unitlens.probe.concept_sources import is_text, probe_vectors, require_text
from unitlens.probe.defaults import LAMBDA, MIN_PROB, P_END, P_START, SOFTMAX_SCALE, TOP_K
from unitlens.probe.labellers import LABELLERS, LabelContext, Labeller, layer_frame, varying


def in_top_probability(n: int, top_k: int = TOP_K, p_start: float = P_START, p_end: float = P_END) -> torch.Tensor:
    """(min(top_k, n),) p(x ∈ B_k) of ranks 0, 1, ...: linear from ``p_start`` towards ``p_end``."""
    k = min(top_k, n)
    return p_start - torch.arange(k, dtype=torch.float64) / top_k * (p_start - p_end)


def top_images(activations: torch.Tensor, k: int) -> np.ndarray:
    """(U, k) indices of each row's k largest values, largest first, ties to the lower index.

    float32 rows (the stored activations) get unique int64 keys (a monotone integer image of the value, then the
    inverted index) and one partial selection; other dtypes a full stable sort.
    """
    if activations.dtype != torch.float32:
        return np.argsort(-activations.double().numpy(), axis=1, kind="stable")[:, :k]
    bits = activations.numpy().view(np.int32).astype(np.int64)
    n = bits.shape[1]
    key = (np.where(bits >= 0, bits, bits ^ 0x7FFFFFFF) << 32) | (n - 1 - np.arange(n))
    part = np.argpartition(key, n - k, axis=1)[:, n - k:]
    best = np.argsort(-np.take_along_axis(key, part, 1), axis=1)
    return np.take_along_axis(part, best, 1)


def soft_wpmi(activations: torch.Tensor, similarities: torch.Tensor, top_k: int = TOP_K, scale: float = SOFTMAX_SCALE,
              lam: float = LAMBDA, p_start: float = P_START, p_end: float = P_END, min_prob: float = MIN_PROB,
              chunk: int = 256) -> torch.Tensor:
    """(U, M) soft-WPMI of every unit (rows of ``activations``, (U, n)) with every concept (columns of
    ``similarities``, (n, M) image–concept cosines)."""
    from scipy.special import logsumexp, softmax

    acts = activations.double().numpy()
    p_concept = softmax(scale * similarities.double().numpy(), axis=1)  # (n, M)
    p_in = in_top_probability(acts.shape[1], top_k, p_start, p_end).numpy()[None, :, None]  # (1, k, 1)
    order = top_images(activations, p_in.shape[1])
    log_given = np.empty((acts.shape[0], p_concept.shape[1]))
    for s in range(0, acts.shape[0], chunk):
        log_given[s:s + chunk] = np.log(p_in * p_concept[order[s:s + chunk]] + (1 - p_in) + min_prob).sum(1)
    log_given += (acts.shape[1] - p_in.shape[1]) * math.log1p(min_prob)  # images outside the top set: p(x ∈ B) = 0
    log_prior = logsumexp(log_given, axis=0) - math.log(log_given.shape[0])
    return torch.from_numpy(log_given - lam * log_prior[None, :])


class ClipDissect(Labeller):
    """Best concept by soft-WPMI over the visible probe images; score soft-WPMI."""

    name, score_name, settings = "clip-dissect", "soft_wpmi", ("top_k",)

    def __init__(self, top_k: int = TOP_K, scale: float = SOFTMAX_SCALE, lam: float = LAMBDA,
                 templates: Sequence[str] = TEMPLATES):
        self.top_k, self.scale, self.lam = top_k, scale, lam
        self.templates = tuple(templates)

    def _backend(self, ctx: LabelContext):
        if ctx.backend is not None and not isinstance(ctx.backend, str):
            return ctx.backend
        name = ctx.backend
        if name is None:
            have = LensStore.backends(ctx.store.atlas)
            name = DEFAULT_LENS_BACKEND if DEFAULT_LENS_BACKEND in have or not have else have[0]
        return as_backend(name, ctx.device)

    def label(self, ctx: LabelContext, layers: list[str]) -> pd.DataFrame:
        backend = self._backend(ctx)
        self.backend = backend.name
        if is_text(ctx.concepts):
            require_text(backend, self.name)  # before the probe images are embedded
        probes = probe_vectors(ctx, backend, self.name, self.templates)
        names = [p.name for p in probes]
        if len(names) < 2:
            raise BadInput(f"clip-dissect picks each unit's concept by contrast with the other concepts, and has only "
                           f"{', '.join(names) or 'none'}; give at least two concepts (a probe set of several, or "
                           "--concepts FILE)")
        images = ctx.store.embeddings(backend, progress=ctx.progress)[torch.as_tensor(ctx.rows, dtype=torch.long)]
        similarities = images.double() @ torch.stack([p.vector for p in probes]).double().T  # (n, M)
        frames = []
        for layer in layers:
            acts = ctx.activations(layer)
            units = varying(acts)
            if len(units):
                wpmi = soft_wpmi(acts[units], similarities, self.top_k, self.scale, self.lam)
                best, idx = wpmi.max(1)
                labels, scores = [names[i] for i in idx.tolist()], best.numpy()
            else:
                labels, scores = [], np.zeros(0)
            frames.append(layer_frame(layer, ctx.n_units(layer), units.numpy(), labels, scores))
        return pd.concat(frames, ignore_index=True)


LABELLERS.register("clip-dissect", ClipDissect)
