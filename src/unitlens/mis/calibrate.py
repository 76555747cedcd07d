"""Fit the MIS temperature τ to human interpretability scores, and the noise ceiling of those scores.

``fit_tau``: the paper fits its one free parameter on a random 5 % of the human-annotated units "to
approximately match the value range" of the human scores. Here that is least squares between each fit unit's
MIS(τ) = mean over tasks of σ((Δ⁺ − Δ⁻)/τ) and its human score, minimised over log τ by a dense grid followed
by golden-section refinement (a 1-D bounded search; no SciPy needed). The held-out units give Pearson and
Spearman correlations of MIS(τ̂) with the human scores.

``noise_ceiling`` (paper appendix B): a unit's human score is a proportion over a few binary decisions, so
even a perfect predictor would not correlate perfectly with it. Simulate the decisions as Bernoulli draws
with the unit's human rate, recompute the proportions, and correlate them with the rates; the mean (and
spread) over simulations is the ceiling a per-unit correlation can be compared with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from unitlens.errors import BadInput
from unitlens.mis.defaults import CALIBRATION_FRACTION, NOISE_SIMULATIONS

SCORE_COLUMN = "score"


@dataclass
class TauFit:
    """A fitted temperature and how MIS(τ̂) agrees with the held-out human scores."""

    tau: float
    n_fit: int
    n_eval: int
    pearson: float
    spearman: float
    rmse_fit: float
    rmse_eval: float
    fit_index: list = field(default_factory=list, repr=False)  # keys of the units τ was fitted on

    def as_dict(self) -> dict:
        return {"tau": self.tau, "n_fit": self.n_fit, "n_eval": self.n_eval, "pearson": self.pearson,
                "spearman": self.spearman, "rmse_fit": self.rmse_fit, "rmse_eval": self.rmse_eval}


@dataclass
class NoiseCeiling:
    """Correlation of simulated human scores with the rates they were drawn from, over ``n_sim`` simulations."""

    pearson_mean: float
    pearson_std: float
    spearman_mean: float
    spearman_std: float
    n_units: int
    n_sim: int
    pearson: np.ndarray | None = field(repr=False, default=None)
    spearman: np.ndarray | None = field(repr=False, default=None)

    def as_dict(self) -> dict:
        return {"pearson_mean": self.pearson_mean, "pearson_std": self.pearson_std,
                "spearman_mean": self.spearman_mean, "spearman_std": self.spearman_std,
                "n_units": self.n_units, "n_sim": self.n_sim}


def pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman's ρ with average ranks for ties."""
    return pearson(pd.Series(np.asarray(x, float)).rank().to_numpy(), pd.Series(np.asarray(y, float)).rank().to_numpy())


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` (S, U) with ``b`` (U,); NaN for constant rows."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean()
    den = np.sqrt((a * a).sum(1) * (b * b).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a @ b) / den, np.nan)


def _align(mis_inputs, human_scores) -> tuple[np.ndarray, np.ndarray, list]:
    """Per-unit task margins (U, N) and human scores (U,) of the units present in both, with their keys."""
    if isinstance(mis_inputs, pd.DataFrame):
        margins = mis_inputs
        if isinstance(human_scores, pd.DataFrame):
            names = [n for n in margins.index.names if n is not None]
            if names and all(n in human_scores.columns for n in names):
                human = human_scores.set_index(names)[SCORE_COLUMN]
            else:
                human = human_scores[SCORE_COLUMN]
        else:
            human = pd.Series(human_scores) if not isinstance(human_scores, pd.Series) else human_scores
        if human.index.has_duplicates:
            raise BadInput("human scores list some units more than once; give one score per unit")
        common = margins.index.intersection(human.index)
        if len(common) == 0:
            raise BadInput("no unit has both margins and a human score (do the unit keys match? expected "
                             f"keys like {list(margins.index[:3])}, got {list(human.index[:3])})")
        return margins.loc[common].to_numpy(float), human.loc[common].to_numpy(float), list(common)
    m = mis_inputs.detach().cpu().double().numpy() if isinstance(mis_inputs, torch.Tensor) else np.asarray(
        mis_inputs, float)
    h = np.asarray(human_scores.detach().cpu() if isinstance(human_scores, torch.Tensor) else human_scores, float)
    if m.ndim != 2 or h.shape != (m.shape[0],):
        raise BadInput(f"expected (U, N) margins and (U,) human scores, got {m.shape} and {h.shape}")
    return m, h, list(range(len(h)))


def _mis(margins: np.ndarray, tau: float) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(margins / tau, -700, 700)))).mean(1)


def _golden(f, lo: float, hi: float, tol: float = 1e-10, max_iter: int = 200) -> float:
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(max_iter):
        if abs(b - a) < tol:
            break
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


def fit_tau(mis_inputs, human_scores, fraction: float = CALIBRATION_FRACTION, seed: int = 0,
            bounds: tuple[float, float] = (1e-3, 10.0), grid: int = 241) -> TauFit:
    """Fit τ on a random ``fraction`` of the units (at least one), evaluate on the rest.

    ``mis_inputs``: per-unit task margins Δ⁺ − Δ⁻ — a DataFrame indexed by unit key (e.g. (layer, unit), as
    ``margins_frame`` gives) with one column per task, or a (U, N) array/tensor. ``human_scores``: a DataFrame
    with the key columns and a ``score`` column (or a Series indexed by key), or a (U,) array aligned with
    the margins. ``fraction=1`` fits on all units (then the correlations are over the same units).
    """
    margins, human, keys = _align(mis_inputs, human_scores)
    ok = np.isfinite(human) & np.isfinite(margins).all(1)
    margins, human, keys = margins[ok], human[ok], [k for k, o in zip(keys, ok) if o]
    n = len(human)
    if n == 0:
        raise BadInput("no unit with finite margins and a finite human score")
    if not 0 < fraction <= 1:
        raise BadInput(f"fraction must be in (0, 1], got {fraction}")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise BadInput(f"bounds must satisfy 0 < low < high, got {bounds}")
    rng = np.random.default_rng(seed)
    n_fit = min(n, max(1, int(round(fraction * n))))
    order = rng.permutation(n)
    fit, rest = order[:n_fit], order[n_fit:]
    if len(rest) == 0:
        rest = fit
    mf, hf = margins[fit], human[fit]

    def loss(log_tau: float) -> float:
        return float(((_mis(mf, math.exp(log_tau)) - hf) ** 2).mean())

    logs = np.linspace(math.log(lo), math.log(hi), grid)
    losses = np.array([loss(v) for v in logs])
    best = int(np.argmin(losses))
    a, b = logs[max(best - 1, 0)], logs[min(best + 1, grid - 1)]
    log_tau = _golden(loss, a, b)
    if loss(log_tau) > losses[best]:
        log_tau = logs[best]
    tau = math.exp(log_tau)
    pred = _mis(margins[rest], tau)
    return TauFit(tau=tau, n_fit=n_fit, n_eval=len(rest), pearson=pearson(pred, human[rest]),
                  spearman=spearman(pred, human[rest]), rmse_fit=math.sqrt(loss(log_tau)),
                  rmse_eval=float(np.sqrt(((pred - human[rest]) ** 2).mean())),
                  fit_index=[keys[i] for i in fit])


def noise_ceiling(human_scores, n_trials, n_sim: int = NOISE_SIMULATIONS, seed: int = 0) -> NoiseCeiling:
    """Appendix B: correlation between per-unit human rates and scores re-simulated from them.

    ``human_scores``: (U,) rates in [0, 1] (array, Series, or DataFrame with a ``score`` column);
    ``n_trials``: decisions per unit, one number or (U,) (a DataFrame column ``n_trials`` is used when given
    as the string ``"n_trials"``). Each simulation draws Binomial(n_trials, rate)/n_trials per unit.
    """
    if isinstance(human_scores, pd.DataFrame):
        if isinstance(n_trials, str):
            n_trials = human_scores[n_trials].to_numpy()
        human_scores = human_scores[SCORE_COLUMN]
    h = np.asarray(human_scores, float)
    t = np.broadcast_to(np.asarray(n_trials, dtype=np.int64), h.shape)
    ok = np.isfinite(h)
    h, t = h[ok], t[ok]
    if len(h) < 3:
        raise BadInput("the noise ceiling needs at least 3 units with human scores")
    if (t < 1).any():
        raise BadInput("n_trials must be at least 1 for every unit")
    if ((h < 0) | (h > 1)).any():
        raise BadInput("human scores must be proportions in [0, 1] for the Bernoulli simulation")
    rng = np.random.default_rng(seed)
    sim = rng.binomial(t, h, size=(n_sim, len(h))) / t
    pr = _rowwise_pearson(sim, h)
    ranks = pd.DataFrame(sim).rank(axis=1).to_numpy()
    sr = _rowwise_pearson(ranks, pd.Series(h).rank().to_numpy())
    return NoiseCeiling(pearson_mean=float(np.nanmean(pr)), pearson_std=float(np.nanstd(pr)),
                        spearman_mean=float(np.nanmean(sr)), spearman_std=float(np.nanstd(sr)),
                        n_units=len(h), n_sim=n_sim, pearson=pr, spearman=sr)
