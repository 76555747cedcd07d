"""The image parameterisation of Olah et al. (2017), as Lucid and Lucent build it, for a batch of images.

Each image is a spectrum (3, H, W//2 + 1) of complex coefficients; the image is its inverse real FFT (orthonormal)
after scaling every frequency f by 1 / max(f, 1 / max(H, W)) ** decay, divided by 4 (Lucid's constant), its three
channels mixed by the square root of ImageNet's colour correlation (normalised to unit column norm: the channels
are optimised decorrelated), and squashed into [0, 1] by a sigmoid. Gradient steps on the spectrum then change
low frequencies and correlated colours about as much as the rest, which is what makes the images recognisable.
``decorrelate=False`` optimises plain pixels (through the same sigmoid) instead.

Every image draws its initial spectrum from its own ``torch.Generator`` (on the CPU), so an image is the same
whichever batch or device it is made in.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from unitlens.featviz.defaults import COLOR_CORRELATION_SVD_SQRT, DECAY_POWER, INIT_SD, MAGIC


def frequencies(h: int, w: int) -> torch.Tensor:
    """(h, w // 2 + 1) spatial frequency magnitudes of a real 2-D FFT."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def colour_matrix() -> torch.Tensor:
    """(3, 3) decorrelated -> RGB colour mixing, columns normalised so the largest has norm 1."""
    m = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=torch.float32)
    return m / m.norm(dim=0).max()


class ImageBatch:
    """``n`` images of ``size`` x ``size`` pixels as one trainable tensor; ``images()`` gives them in [0, 1]."""

    def __init__(self, generators: Sequence[torch.Generator], size: int, decorrelate: bool = True,
                 device: torch.device | str = "cpu", sd: float = INIT_SD, decay_power: float = DECAY_POWER):
        self.size, self.decorrelate = int(size), decorrelate
        h = w = self.size
        shape = (3, h, w // 2 + 1, 2) if decorrelate else (3, h, w)
        init = torch.stack([torch.randn(shape, generator=g) for g in generators]) * sd
        self.param = init.to(device).requires_grad_(True)
        if decorrelate:
            freqs = frequencies(h, w)
            scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
            self.scale = scale.float()[None, None, :, :, None].to(device)
            self.colours = colour_matrix().to(device)

    def __len__(self) -> int:
        return self.param.shape[0]

    def images(self) -> torch.Tensor:
        """(n, 3, size, size) in [0, 1], differentiable in ``param``."""
        if not self.decorrelate:
            return torch.sigmoid(self.param)
        spectrum = torch.view_as_complex(self.scale * self.param)
        x = torch.fft.irfftn(spectrum, s=(self.size, self.size), norm="ortho") / MAGIC
        x = torch.einsum("nchw,dc->ndhw", x, self.colours)
        return torch.sigmoid(x)
