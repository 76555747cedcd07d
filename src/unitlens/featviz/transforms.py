"""The robustness transforms of feature visualisation, drawn per image and applied to a batch in one resampling.

Lucent's standard transforms — pad 12 px with grey, jitter by 0..7 px, scale by 0.90..1.10, rotate by −10°..10°
(0° five times likelier), jitter by 0..3 px — are one affine map of the padded canvas. ``RandomTransforms``
draws every image's parameters for every step from the image's own generator at the start (so an image's
transforms do not depend on its batch), and ``apply`` composes them into one ``affine_grid`` + ``grid_sample``
per step for the whole batch, each image with its own map, sampled back onto ``size`` x ``size`` pixels (Lucent's
``fixed_image_size``): the model sees inputs of one size throughout. Outside the padded canvas the image is black
(0), as after Lucent's translations.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from unitlens.featviz.defaults import ANGLES, JITTER_FIRST, JITTER_LAST, PAD, PAD_VALUE, SCALES


class RandomTransforms:
    """Per-image, per-step transform parameters; ``apply(x, step)`` transforms a batch of images in [0, 1]."""

    def __init__(self, generators: Sequence[torch.Generator], steps: int, device: torch.device | str = "cpu"):
        draws = []
        for g in generators:
            first = torch.randint(JITTER_FIRST, (steps, 2), generator=g).double()
            scale = torch.tensor(SCALES, dtype=torch.float64)[torch.randint(len(SCALES), (steps,), generator=g)]
            angle = torch.tensor(ANGLES, dtype=torch.float64)[torch.randint(len(ANGLES), (steps,), generator=g)]
            last = torch.randint(JITTER_LAST, (steps, 2), generator=g).double()
            draws.append(torch.cat([first, scale[:, None], angle[:, None], last], 1))
        self.params = torch.stack(draws, 1)  # (steps, n, 6): dx1, dy1, scale, degrees, dx2, dy2
        self.device = torch.device(device)

    def theta(self, step: int, size: int) -> torch.Tensor:
        """(n, 2, 3) maps from output to input coordinates (normalised, the padded canvas both ways)."""
        p = self.params[step]
        canvas = size + 2 * PAD
        t1, s, a, t2 = p[:, 0:2] * 2 / canvas, p[:, 2], p[:, 3] * math.pi / 180, p[:, 4:6] * 2 / canvas
        cos, sin = torch.cos(a) / s, torch.sin(a) / s
        A = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # R⁻¹ / s
        b = -(A @ t2[:, :, None])[:, :, 0] - t1
        return torch.cat([A, b[:, :, None]], 2).float().to(self.device)

    def apply(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """(n, 3, S, S) images -> the same images padded, jittered, scaled, rotated, jittered, at S x S."""
        n, c, h, w = x.shape
        padded = F.pad(x, [PAD] * 4, value=PAD_VALUE)
        grid = F.affine_grid(self.theta(step, h), [n, c, h, w], align_corners=False)
        return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
