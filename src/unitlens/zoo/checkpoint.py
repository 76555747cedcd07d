"""Load a state dict into a model, failing loudly on the first mismatching tensor."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from unitlens.errors import CheckpointMismatch, MissingFile


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pt/.pth/.bin`` or ``.safetensors`` checkpoint; unwrap common ``{"state_dict": ...}`` nesting."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointMismatch(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; name the first missing, unexpected or mis-shaped tensor on failure."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise CheckpointMismatch(f"{source}: tensor '{name}' of the architecture is missing from the checkpoint")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointMismatch(
                f"{source}: tensor '{name}' has shape {tuple(state[name].shape)} in the checkpoint "
                f"but {tuple(tensor.shape)} in the architecture"
            )
    extra = [k for k in state if k not in own]
    if extra:
        raise CheckpointMismatch(f"{source}: checkpoint tensor '{extra[0]}' has no place in the architecture")
    model.load_state_dict(dict(state), strict=True)


def map_by_order(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename ``state``'s tensors onto ``model``'s keys position by position (same layout, other names)."""
    own = model.state_dict()
    if len(own) != len(state):
        raise CheckpointMismatch(f"{source}: {len(state)} tensors in the checkpoint, {len(own)} in the architecture")
    mapped = {}
    for (name, tensor), (src_name, value) in zip(own.items(), state.items()):
        if tuple(value.shape) != tuple(tensor.shape):
            raise CheckpointMismatch(
                f"{source}: checkpoint tensor '{src_name}' {tuple(value.shape)} does not fit "
                f"'{name}' {tuple(tensor.shape)}"
            )
        mapped[name] = value
    return mapped
