"""AUC of every unit against many indicators at once, from ranks (the Mann-Whitney U statistic).

For a unit with activations a over n images and an indicator y with n1 positives and n0 = n - n1 negatives,
AUC = P(a_pos > a_neg) + P(a_pos = a_neg) / 2 = (sum of the positives' ranks - n1 (n1 + 1) / 2) / (n1 n0), with
average ranks for ties. Ranking each unit once turns the AUC of all units against all indicators into one
matrix product ``ranks @ Y``: no loop over units or images.
"""
from __future__ import annotations

import numpy as np
import torch


def row_ranks(activations: torch.Tensor | np.ndarray) -> np.ndarray:
    """(U, n) average ranks 1..n of each row (ties share their mean rank), float64."""
    from scipy.stats import rankdata

    a = activations.double().numpy() if isinstance(activations, torch.Tensor) else np.asarray(activations, float)
    return rankdata(a, axis=1, method="average")


def auc_by_ranks(ranks: np.ndarray, indicators: np.ndarray) -> np.ndarray:
    """(U, F) AUC of each unit's activations separating the positives of each indicator column (n, F) from
    its negatives; NaN where a column has no positive or no negative."""
    Y = np.asarray(indicators, dtype=np.float64).reshape(ranks.shape[1], -1)
    n = Y.shape[0]
    n1 = Y.sum(0)
    n0 = n - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ranks @ Y - n1 * (n1 + 1) / 2) / (n1 * n0)
    out[:, (n1 == 0) | (n0 == 0)] = np.nan
    return out


def mean_difference(activations: torch.Tensor | np.ndarray, indicators: np.ndarray) -> np.ndarray:
    """(U, F) mean activation on each indicator's positives minus the mean on its negatives (NaN if one is
    empty)."""
    a = activations.double().numpy() if isinstance(activations, torch.Tensor) else np.asarray(activations, float)
    Y = np.asarray(indicators, dtype=np.float64).reshape(a.shape[1], -1)
    n1 = Y.sum(0)
    n0 = Y.shape[0] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a @ Y) / n1 - (a @ (1 - Y)) / n0
