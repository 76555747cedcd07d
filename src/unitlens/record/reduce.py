"""Turn a layer output into one value per unit and sample: (B, C, ...) or (B, ..., C) -> (B, C).

Windowed attention (timm's Swin, ViTDet-style blocks) runs its layers on (B·windows, tokens, C): the image batch
is folded into the leading dim, image-major, with equally sized windows. Given the batch size, such outputs are
read as (B, windows·tokens, C), so their mean (or max) is over every position of the image, like a map's.
"""
from __future__ import annotations

import torch

from unitlens.errors import BadInput
from unitlens.runtime import first_tensor


def unfold_windows(output: torch.Tensor, channel_dim: int, batch: int) -> torch.Tensor:
    """(B·W, ...) windowed output -> one row per image: (B, W·tokens, C) channel-last, (B, C, W, ...) else."""
    rows = output.shape[0]
    if rows == batch:
        return output
    if batch < 1 or rows % batch:
        raise BadInput(f"its output {tuple(output.shape)} has {rows} rows for a batch of {batch} images, not one "
                       "(or a whole number of windows) per image")
    if channel_dim == 1:
        return output.reshape(batch, rows // batch, *output.shape[1:]).transpose(1, 2)
    return output.reshape(batch, -1, output.shape[-1])


def reduce_output(output: torch.Tensor, channel_dim: int, spatial: str = "mean", tokens: str = "mean",
                  batch: int | None = None) -> torch.Tensor:
    """Average (or max) over space for channel-first maps; mean/cls/max over tokens for channel-last outputs.

    ``batch``: the number of images in the forward pass; an output with more rows (windows) is unfolded first.
    """
    output = first_tensor(output)
    if batch is not None and output.shape[0] != batch:
        if tokens == "cls" and channel_dim != 1:
            raise BadInput("its output folds windows into the batch and has no class token; use tokens='mean' or "
                           "'max' (CLI: --tokens mean)")
        output = unfold_windows(output, channel_dim, batch)
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
