"""SemanticLens interpretability measures (section 3.5 of the SemanticLens paper, Dreyer et al., 2025, eqs. 6–10)
for all units of a layer at once, on plain tensors: use them on embeddings of your own.

Inputs are per-unit concept-example embeddings ``E`` of shape (U, m, D) — m examples per unit, L2-normalised
in the foundation model's space — with an optional (U, m) boolean ``mask`` for units that have fewer than m
valid examples, and unit vectors ``theta`` (U, D). Everything runs as a handful of batched tensor operations
on whatever device the inputs live on; there is no Python loop over units and no per-unit sklearn fit.

- ``clarity``: mean pairwise cosine of a unit's examples (i ≠ j), by the closed form of eq. (7),
  (n·‖mean of normalised examples‖² − 1)/(n − 1).
- ``polysemanticity``: 1 − clarity of the h = 2 cluster means of a 2-means over the unit's examples (eq. 10).
  Clarity of two vectors is their cosine, so this is 1 − cos(c₀, c₁) (cluster means normalised, as in the
  reference ``semanticlens.scores.polysemanticity_score``), in [0, 2].
- ``similarity``: cosine matrix between two sets of unit vectors (eq. 8).
- ``redundancy``: mean over units of the max cosine to another unit of the same set (eq. 9), with each unit's
  max similarity and its partner.

2-means (``two_means``): batched Lloyd iterations carried out in Gram space. With G = E Eᵀ (U, m, m) computed
once, a centre is a weight vector w over the examples, ‖x_i − c‖² = G_ii − 2(Gw)_i + wᵀGw and
cos(c₀, c₁) = w₀ᵀGw₁ / √(w₀ᵀGw₀ · w₁ᵀGw₁), so each iteration costs O(U·m²) instead of O(U·m·D) and many
restarts are nearly free. ``n_init`` restarts (default 10, the reference's sklearn ``n_init``), all units at
once, lowest inertia kept per unit (the first on ties):

- restart 0: deterministic farthest-point init — first centre = the example farthest from the unit's mean,
  second = the example farthest from the first (finds a clear two-group split in one Lloyd step);
- restarts 1 … n_init − 1: k-means++ (first centre uniform, second ∝ squared distance), drawn from one
  ``torch.Generator`` seeded with ``seed`` on the CPU, so results do not depend on the device.

Each restart iterates until its labels stop changing (the strict convergence of sklearn's Lloyd), so for a
given init it reaches the same partition as ``sklearn.cluster.KMeans(init=centres, n_init=1)``.

Like the reference, a unit whose best partition has a cluster with fewer than 2 examples (an outlier split
off on its own) gets the fallback polysemanticity 1 − mean_i cos(mean, v_i) over its first 10 examples,
instead of the cosine to a single outlier. The paper does not state this rule; it is the reference's.

Examples are clustered as given (like the reference's ``KMeans`` on its embeddings), while every cosine
normalises; with normalised inputs, as documented, this is the same thing.

"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from unitlens.errors import BadInput
from unitlens.lens.defaults import N_INIT, SEED

Tensor = torch.Tensor

__all__ = ["Redundancy", "TwoMeans", "clarity", "init_centers", "measures_table", "polysemanticity",
           "redundancy", "similarity", "theta_from_examples", "two_means"]


def _float(x: Tensor) -> Tensor:
    """Compute in float32 at least (half precision is too coarse for Gram-space distances)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _prepare(E: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Float examples with invalid rows zeroed, and the (U, m) 0/1 validity weights."""
    E = _float(E)
    if E.dim() != 3:
        raise BadInput(f"expected examples of shape (U, m, D), got {tuple(E.shape)}")
    if mask is None:
        return E, E.new_ones(E.shape[:2])
    if mask.shape != E.shape[:2]:
        raise BadInput(f"mask shape {tuple(mask.shape)} does not match examples {tuple(E.shape[:2])}")
    w = mask.to(device=E.device, dtype=E.dtype)
    return E * w[..., None], w


def theta_from_examples(E: Tensor, mask: Tensor | None = None) -> Tensor:
    """θ per unit: the normalised mean of its normalised valid examples.

    Parameters
    ----------
    E
        (U, m, D) concept-example embeddings of U units.
    mask
        (U, m) boolean: which examples are valid (default: all).

    Returns
    -------
    Tensor
        (U, D) unit vectors.
    """
    E, w = _prepare(F.normalize(_float(E), dim=-1), mask)
    return F.normalize(E.sum(1) / w.sum(1, keepdim=True).clamp_min(1), dim=-1)


def clarity(E: Tensor, mask: Tensor | None = None) -> Tensor:
    """Clarity of each unit: the mean pairwise cosine (i ≠ j) of its concept examples (eq. 7).

    Computed in closed form, (n·‖mean of the normalised examples‖² − 1)/(n − 1), without the m × m matrix.

    Parameters
    ----------
    E
        (U, m, D) concept-example embeddings (normalised or not: every cosine normalises), on any device.
    mask
        (U, m) boolean: which examples are valid (default: all); a unit may have fewer than m.

    Returns
    -------
    Tensor
        (U,) clarity in [−1, 1] (1: all examples point the same way); NaN for units with fewer than 2 examples.

    Examples
    --------
    >>> clarity(torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]))
    tensor([1., 0.])
    """
    En, w = _prepare(F.normalize(_float(E), dim=-1), mask)
    n = w.sum(1)
    total = En.sum(1).pow(2).sum(-1)  # ‖Σ v̂_i‖² = n + Σ_{i≠j} cos(v_i, v_j)
    out = (total - n) / (n * (n - 1))
    return torch.where(n >= 2, out, torch.full_like(out, float("nan")))


@dataclass(frozen=True)
class TwoMeans:
    """Best 2-means partition per unit (all tensors on the input's device)."""

    labels: Tensor  # (U, m) int64 in {0, 1}; -1 for masked examples
    centers: Tensor  # (U, 2, D) cluster means of the examples as given
    counts: Tensor  # (U, 2) int64 cluster sizes
    inertia: Tensor  # (U,) sum of squared distances to the assigned centre
    cosine: Tensor  # (U,) cos(c₀, c₁); NaN where a cluster is empty
    init: Tensor  # (U, 2) example indices the winning restart started from
    n_iter: int  # Lloyd iterations until every restart of every unit had stable labels


def _gram(E: Tensor) -> tuple[Tensor, Tensor]:
    G = E @ E.transpose(1, 2)
    return G, G.diagonal(dim1=1, dim2=2)


def _dist_to_examples(G: Tensor, g: Tensor, idx: Tensor) -> Tensor:
    """Squared distances (U, R, m) from every example to example idx[u, r]."""
    U, m, _ = G.shape
    rows = torch.gather(G, 1, idx[..., None].expand(U, idx.shape[1], m))
    return g[:, None, :] - 2 * rows + torch.gather(g, 1, idx)[..., None]


def _sample(weights: Tensor, u: Tensor, fallback: Tensor) -> Tensor:
    """Inverse-CDF draw of one index per row of (U, R, m) non-negative weights; ``fallback`` if all zero."""
    cdf = weights.cumsum(-1)
    total = cdf[..., -1:]
    idx = torch.searchsorted(cdf.contiguous(), (u[..., None] * total).contiguous(), right=True)[..., 0]
    idx = idx.clamp_max(weights.shape[-1] - 1)
    return torch.where(total[..., 0] > 0, idx, fallback)


def init_centers(E: Tensor, mask: Tensor | None = None, *, n_init: int = N_INIT, seed: int = SEED) -> Tensor:
    """Initial centre indices (U, n_init, 2): restart 0 farthest-point, the rest seeded k-means++."""
    E, w = _prepare(E, mask)
    G, g = _gram(E)
    return _init_from_gram(G, g, w, n_init, seed)


def _init_from_gram(G: Tensor, g: Tensor, w: Tensor, n_init: int, seed: int) -> Tensor:
    if n_init < 1:
        raise BadInput("n_init must be >= 1")
    U, m, _ = G.shape
    valid = w > 0
    neg_inf = torch.tensor(float("-inf"), device=G.device, dtype=G.dtype)
    # restart 0: farthest from the mean, then farthest from that one
    wbar = w / w.sum(1, keepdim=True).clamp_min(1)
    Gw = (G @ wbar[..., None])[..., 0]
    d_mean = g - 2 * Gw + (wbar * Gw).sum(-1, keepdim=True)
    first = torch.where(valid, d_mean, neg_inf).argmax(-1)[:, None]  # (U, 1)
    d_first = _dist_to_examples(G, g, first)[:, 0]
    second = torch.where(valid, d_first, neg_inf).argmax(-1)[:, None]
    idx = [torch.stack([first, second], -1)]  # (U, 1, 2)
    if n_init > 1:  # restarts 1..: k-means++ with seeded uniforms, drawn on the CPU for device independence
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand((U, n_init - 1, 2), generator=gen, dtype=torch.float64).to(G.device, G.dtype)
        wr = w[:, None, :].expand(U, n_init - 1, m)
        c0 = _sample(wr, u[..., 0], first.expand(U, n_init - 1))
        d0 = _dist_to_examples(G, g, c0).clamp_min(0) * wr
        c1 = _sample(d0, u[..., 1], c0)
        idx.append(torch.stack([c0, c1], -1))
    return torch.cat(idx, 1)


def _lloyd(G: Tensor, g: Tensor, w: Tensor, idx: Tensor, max_iter: int) -> dict:
    """Lloyd iterations of all units and restarts in Gram space; the best restart per unit, as weights."""
    if max_iter < 1:
        raise BadInput("max_iter must be >= 1")
    U, R, m = idx.shape[0], idx.shape[1], G.shape[1]
    valid = (w > 0)[:, None, :]
    d = _dist_to_examples(G, g, idx.reshape(U, 2 * R)).reshape(U, R, 2, m)
    labels = (d[:, :, 1] < d[:, :, 0]) & valid  # ties go to cluster 0, as argmin does
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count of iterations run is returned)
        assigned = labels
        W = torch.stack([(~labels) & valid, labels], 2).to(G.dtype)  # (U, R, 2, m)
        counts = W.sum(-1)
        W = W / counts.clamp_min(1)[..., None]  # centre j = W[..., j, :] @ E
        WG = (W.reshape(U, 2 * R, m) @ G).reshape(U, R, 2, m)
        cc = (WG * W).sum(-1)  # ‖c_j‖²
        d = g[:, None, None, :] - 2 * WG + cc[..., None]
        new = (d[:, :, 1] < d[:, :, 0]) & valid
        if torch.equal(new, labels):
            break
        labels = new
    # W, WG, cc, d belong to ``assigned``: the converged labels (unless max_iter ran out first)
    inertia = (torch.minimum(d[:, :, 0], d[:, :, 1]).clamp_min(0) * valid).sum(-1)  # (U, R)
    best = inertia.argmin(-1)
    rows = torch.arange(U, device=G.device)
    W, WG, cc, counts = W[rows, best], WG[rows, best], cc[rows, best], counts[rows, best]
    cos = ((WG[:, 0] * W[:, 1]).sum(-1) / (cc[:, 0] * cc[:, 1]).sqrt()).clamp(-1, 1)
    cos = torch.where(counts.amin(-1) > 0, cos, torch.full_like(cos, float("nan")))
    labels = torch.where(valid[:, 0], assigned[rows, best].long(), -1)
    return dict(W=W, labels=labels, counts=counts.long(), inertia=inertia[rows, best], cosine=cos,
                init=idx[rows, best], n_iter=n_iter)


def two_means(E: Tensor, mask: Tensor | None = None, *, n_init: int = N_INIT, seed: int = SEED,
              max_iter: int = 300, init: Tensor | None = None) -> TwoMeans:
    """Batched 2-means (Lloyd) of each unit's examples, all units and restarts at once, in Gram space.

    ``init`` (U, R, 2) example indices overrides ``init_centers``; examples are clustered as given (the
    reference clusters its embeddings without re-normalising them).
    """
    E, w = _prepare(E, mask)
    G, g = _gram(E)
    idx = _init_from_gram(G, g, w, n_init, seed) if init is None else init.to(G.device)
    r = _lloyd(G, g, w, idx, max_iter)
    return TwoMeans(labels=r["labels"], centers=r["W"] @ E, counts=r["counts"], inertia=r["inertia"],
                    cosine=r["cosine"], init=r["init"], n_iter=r["n_iter"])


def polysemanticity(E: Tensor, mask: Tensor | None = None, *, seed: int = SEED, n_init: int = N_INIT,
                    max_iter: int = 300, min_cluster: int = 2, fallback_examples: int = 10) -> Tensor:
    """Polysemanticity of each unit: 1 − clarity of the two cluster means of a 2-means over its concept examples
    (eq. 10), i.e. 1 − cos(c₀, c₁).

    All units and restarts are clustered at once in Gram space (see the module docstring). Everything after the
    Gram matrix works on (U, m, m) tensors.

    Parameters
    ----------
    E
        (U, m, D) concept-example embeddings (clustered as given; normalise them first, as the lens stores them).
    mask
        (U, m) boolean: which examples are valid (default: all).
    seed
        Seeds the k-means++ restarts (drawn on the CPU: the result does not depend on the device).
    n_init
        Restarts per unit; the partition of lowest inertia is kept (restart 0 is a deterministic farthest-point
        start).
    max_iter
        Lloyd iterations at most.
    min_cluster
        A unit whose smaller cluster has fewer examples than this (an outlier split off) gets the reference
        implementation's fallback, 1 − mean cos(mean, v_i) over its first ``fallback_examples`` valid examples;
        0 turns the fallback off.
    fallback_examples
        Examples the fallback averages over.

    Returns
    -------
    Tensor
        (U,) polysemanticity in [0, 2] (0: the two clusters point the same way); NaN below 2 examples.

    Examples
    --------
    >>> E = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    >>> polysemanticity(E)
    tensor([1.])
    """
    E, w = _prepare(E, mask)
    G, g = _gram(E)
    r = _lloyd(G, g, w, _init_from_gram(G, g, w, n_init, seed), max_iter)
    poly = 1 - r["cosine"]
    use = r["counts"].amin(-1) < min_cluster
    if bool(use.any()):  # cos(Σ_j x_j, x_i) = (Gw)_i / (√g_i · √(wᵀGw)), over the first valid examples
        Gw = (G @ w[..., None])[..., 0]
        cos = Gw / (g.clamp_min(1e-30) * (w * Gw).sum(-1, keepdim=True).clamp_min(1e-30)).sqrt()
        first = (w.cumsum(1) <= fallback_examples) * w
        poly = torch.where(use, 1 - (cos * first).sum(1) / first.sum(1).clamp_min(1), poly)
    return torch.where(w.sum(1) >= 2, poly, torch.full_like(poly, float("nan")))


def similarity(theta_a: Tensor, theta_b: Tensor | None = None) -> Tensor:
    """Cosine similarity matrix between two sets of unit vectors (eq. 8).

    Parameters
    ----------
    theta_a
        (Ua, D) unit vectors.
    theta_b
        (Ub, D) unit vectors (default: ``theta_a``).

    Returns
    -------
    Tensor
        (Ua, Ub) cosines.
    """
    a = F.normalize(_float(theta_a), dim=-1)
    b = a if theta_b is None else F.normalize(_float(theta_b).to(a.device), dim=-1)
    return a @ b.T


class Redundancy(NamedTuple):
    """Layer redundancy (eq. 9) and, per unit, the max cosine to another unit and that unit's index."""

    redundancy: Tensor  # () mean of max_similarity
    max_similarity: Tensor  # (U,)
    partner: Tensor  # (U,) int64 index of the most similar other unit


def redundancy(theta: Tensor, *, block: int = 4096) -> Redundancy:
    """Redundancy of a set of units: the mean over units of the max cosine to another unit (eq. 9).

    Parameters
    ----------
    theta
        (U, D) unit vectors (θ of a layer; normalised or not).
    block
        Rows compared at once, so the U × U matrix never has to fit in memory.

    Returns
    -------
    Redundancy
        ``.redundancy`` (a scalar tensor; NaN below 2 units), and per unit ``.max_similarity`` (U,) and
        ``.partner`` (U,), the index of its most similar other unit (−1 below 2 units).

    Examples
    --------
    >>> redundancy(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])).max_similarity
    tensor([1., 1., 0.])
    """
    t = F.normalize(_float(theta), dim=-1)
    U = t.shape[0]
    if U < 2:
        nan = t.new_full((U,), float("nan"))
        return Redundancy(t.new_tensor(float("nan")), nan, torch.full((U,), -1, device=t.device))
    vals, idx = [], []
    for s in range(0, U, block):
        sims = t[s:s + block] @ t.T
        rows = torch.arange(sims.shape[0], device=t.device)
        sims[rows, rows + s] = float("-inf")  # exclude self
        v, i = sims.max(-1)
        vals.append(v)
        idx.append(i)
    max_sim, partner = torch.cat(vals), torch.cat(idx)
    return Redundancy(max_sim.mean(), max_sim, partner)


def measures_table(E: Tensor, theta: Tensor | None = None, mask: Tensor | None = None, *,
                   units: Sequence | None = None, seed: int = SEED, n_init: int = N_INIT) -> pd.DataFrame:
    """Every measure of every unit of a layer, as a table.

    Parameters
    ----------
    E
        (U, m, D) concept-example embeddings.
    theta
        (U, D) unit vectors (default: ``theta_from_examples(E, mask)``).
    mask
        (U, m) boolean: which examples are valid (default: all).
    units
        Labels of the rows (and of the partners); default 0 … U−1.
    seed, n_init
        Of the 2-means restarts (``polysemanticity``).

    Returns
    -------
    pandas.DataFrame
        One row per unit: unit, n_examples, clarity, polysemanticity, max_similarity, partner; the layer's
        redundancy (the mean of max_similarity) is in ``df.attrs["redundancy"]``.
    """
    if theta is None:
        theta = theta_from_examples(E, mask)
    U = E.shape[0]
    if theta.shape[0] != U:
        raise BadInput(f"theta has {theta.shape[0]} units, examples {U}")
    labels = list(range(U)) if units is None else list(units)
    red = redundancy(theta)
    n = torch.full((U,), E.shape[1]) if mask is None else mask.sum(1)
    def cpu(t: torch.Tensor):
        return t.detach().double().cpu().numpy()

    df = pd.DataFrame({
        "unit": labels,
        "n_examples": n.long().cpu().numpy(),
        "clarity": cpu(clarity(E, mask)),
        "polysemanticity": cpu(polysemanticity(E, mask, seed=seed, n_init=n_init)),
        "max_similarity": cpu(red.max_similarity),
        "partner": [labels[i] if i >= 0 else None for i in red.partner.tolist()],
    })
    df.attrs["redundancy"] = float(red.redundancy)
    return df
