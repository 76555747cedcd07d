"""Turn a layer output into one value per unit and sample: (B, C, ...) or (B, ..., C) -> (B, C).

Windowed attention (timm's Swin, ViTDet-style blocks) runs its layers on (B·windows, tokens, C): the image batch
is folded into the leading dim, image-major, with equally sized windows. Given the batch size, such outputs are
read as (B, windows·tokens, C), so their mean (or max) is over every position of the image, like a map's.

``reduce_output`` reads the output. ``input_affine`` finds layers whose output means follow from their input's
means without reading the output: a 1x1 convolution (stride 1, no padding, one group) or a linear layer on
tokens is affine at every position, so the mean over positions of W·x + b is W·(the mean of x) + b. For an
expanding layer (a MobileNet block's 1x1 expansion, a transformer MLP's first layer) the input is several
times smaller than the output, so the record pass reduces the input instead.
"""
from __future__ import annotations

import torch
from torch import nn

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


def input_affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(W (C_out, C_in), b (C_out,)), float64, when the spatial (or token) means of ``module``'s output are
    W · (the means of its input) + b; None for any other module."""
    if type(module) is nn.Conv2d:  # exactly torch's Conv2d: subclasses may pad or act in their own forward
        if (module.kernel_size, module.stride, module.dilation, module.groups) != ((1, 1), (1, 1), (1, 1), 1):
            return None
        if module.padding not in ((0, 0), "valid"):
            return None
        weight = module.weight.detach()[:, :, 0, 0]
    elif type(module) is nn.Linear:
        weight = module.weight.detach()
    else:
        return None
    bias = module.bias.detach() if module.bias is not None else torch.zeros(weight.shape[0], device=weight.device)
    return weight.double(), bias.double()


def mean_from_input(x: torch.Tensor, channel_dim: int, affine: tuple[torch.Tensor, torch.Tensor],
                    batch: int | None = None) -> torch.Tensor:
    """(B, C_out) output means of an affine layer from its input ``x`` (channels along ``channel_dim``; windows
    folded into the batch are unfolded as ``reduce_output`` does)."""
    weight, bias = affine
    means = reduce_output(x, channel_dim, batch=batch).double()
    return torch.addmm(bias, means, weight.T).float()
