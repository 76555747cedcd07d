"""The normalisation a model's preprocessing applies to [0, 1] images, so optimised images enter the model as its
own transform would hand them over."""
from __future__ import annotations

from typing import Any


def input_normalization(transform: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the ``Normalize`` step of a (torchvision-style) transform; (0, 0, 0), (1, 1, 1) when it has
    none (a ``ToTensor``-only pipeline feeds [0, 1] images as they are)."""
    steps = list(getattr(transform, "transforms", [transform]))
    for step in steps:
        mean, std = getattr(step, "mean", None), getattr(step, "std", None)
        if mean is not None and std is not None:
            return _triple(mean), _triple(std)
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _triple(value: Any) -> tuple[float, ...]:
    values = [float(v) for v in (value.tolist() if hasattr(value, "tolist") else value)] \
        if not isinstance(value, (int, float)) else [float(value)]
    return tuple(values * 3) if len(values) == 1 else tuple(values)
