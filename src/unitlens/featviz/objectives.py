"""What a visualisation optimises: the unit exactly as the atlas records it.

A ``UnitReader`` reads, from the output of one module, the value of one chosen unit per image:

- ``ChannelReader``: a channel of a layer reduced as the record pass reduces it (``recording.reduce.reduce_output``:
  spatial mean or max of (B, C, H, W) maps, token mean / cls / max of (B, T, C) outputs);
- ``BasisReader``: a feature of a fitted basis — the encoder applied to the parent layer's output per image or per
  position, then reduced (``basis.recording.basis_features``), so a derived layer ``L::NAME`` is optimised as it was
  recorded. Encoders whose features are computed one by one (no activation, ReLU, per-feature thresholds) compute
  only the features the batch asks for; a TopK encoder computes all of them (its features compete). An NMF code
  (a solver outside torch) has no gradient: ``gradient_path`` refuses it before any work.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from unitlens.basis.activations import position_reduction, positions_of
from unitlens.basis.encoder import Encoder
from unitlens.basis.recording import basis_features
from unitlens.errors import BadInput
from unitlens.recording.reduce import reduce_output
from unitlens.runtime import first_tensor
from unitlens.zoo.units import channel_dim_of

SEPARABLE = ("none", "relu", "threshold")  # encoder activations computed feature by feature


@dataclass
class ChannelReader:
    """A layer's channels, reduced as the atlas's record pass reduced them."""

    module: str
    channel_dim: int = 0  # 0: found from the output (``zoo.units.channel_dim_of``)
    width: int | None = None
    spatial: str = "mean"
    tokens: str = "mean"

    def all_units(self, output: torch.Tensor) -> torch.Tensor:
        """(B, C): every unit of every image."""
        out = first_tensor(output)
        return reduce_output(out, channel_dim_of(out, self.channel_dim, self.width), self.spatial, self.tokens,
                             batch=out.shape[0])

    def values(self, output: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """(B,): unit ``units[b]`` of image b."""
        return self.all_units(output).gather(1, units[:, None])[:, 0]


@dataclass
class BasisReader:
    """The features of a basis on its parent layer (``module``), reduced as ``unitlens basis record`` does."""

    module: str
    encoder: Encoder
    positions: str
    channel_dim: int = 0
    spatial: str = "mean"
    tokens: str = "mean"

    @property
    def width(self) -> int:
        return self.encoder.features

    def all_units(self, output: torch.Tensor) -> torch.Tensor:
        out = first_tensor(output)
        return basis_features(out, self.encoder, self.positions, self.channel_dim, self.spatial, self.tokens)

    def values(self, output: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        if enc.activation not in SEPARABLE:
            return self.all_units(output).gather(1, units[:, None])[:, 0]
        out = first_tensor(output)
        if self.positions == "image":
            rows = reduce_output(out, channel_dim_of(out, self.channel_dim), self.spatial, self.tokens)[:, None]
        else:
            rows = positions_of(out, self.channel_dim)  # (B, P, C)
        rows = rows.float()
        if enc.center is not None:
            rows = rows - enc.center
        f = torch.einsum("bpc,bc->bp", rows, enc.weight[units])  # image b: its own feature only
        if enc.bias is not None:
            f = f + enc.bias[units][:, None]
        if enc.activation != "none":
            f = torch.relu(f)
        if enc.activation == "threshold":
            assert enc.threshold is not None  # a threshold encoder always has them
            f = f * (f >= enc.threshold[units][:, None])
        if self.positions == "image":
            return f[:, 0]
        how = position_reduction(out, self.channel_dim, self.spatial, self.tokens)
        return reduce_output(f[:, :, None], -1, tokens=how)[:, 0]


UnitReader = ChannelReader | BasisReader


def gradient_path(reader: UnitReader, layer: str) -> None:
    """Refuse a unit whose value has no gradient with respect to the image (before any work)."""
    if isinstance(reader, BasisReader) and reader.encoder.activation == "nmf":
        raise BadInput(f"layer {layer}: its features are NMF codes, computed by a solver outside torch, so no "
                       "gradient reaches the image and they cannot be optimised; visualise the parent layer "
                       f"{reader.module} or a basis of another kind")
