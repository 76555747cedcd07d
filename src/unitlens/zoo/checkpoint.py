"""Load a state dict into a model: strictly (failing loudly on the first mismatching tensor), or only the tensors
that fit, reporting the ones it skipped (a fine-tuned model with another head, a backbone checkpoint)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


_PARTIAL = "or load only the tensors that fit: checkpoint_strict=False (CLI: --no-checkpoint-strict)"


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; name the first missing, unexpected or mis-shaped tensor on failure."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in state:
            raise CheckpointMismatch(f"{source}: tensor '{name}' of the architecture is missing from the checkpoint; "
                                     f"{_PARTIAL}")
        theirs, ours = tuple(state[name].shape), tuple(tensor.shape)
        if theirs != ours:
            head = (f"a head for {theirs[0]} classes? pass num_classes={theirs[0]} (CLI: --num-classes {theirs[0]}), "
                    if _in_head(model, name) and theirs[1:] == ours[1:] else "")
            raise CheckpointMismatch(f"{source}: tensor '{name}' has shape {theirs} in the checkpoint but {ours} in "
                                     f"the architecture ({head}{_PARTIAL})")
    extra = [k for k in state if k not in own]
    if extra:
        raise CheckpointMismatch(f"{source}: checkpoint tensor '{extra[0]}' has no place in the architecture; "
                                 f"{_PARTIAL}")
    model.load_state_dict(dict(state), strict=True)


def _in_head(model: nn.Module, tensor: str) -> bool:
    """Whether ``tensor`` belongs to the model's last Linear layer (its classification head)."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return bool(linears) and tensor.rpartition(".")[0] == linears[-1]


@dataclass
class CheckpointFit:
    """What a non-strict load did: how many tensors it loaded and which it skipped. Skipped architecture tensors
    keep their initial values."""

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)  # in the architecture, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, no place in the architecture
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # name, checkpoint, architecture shape

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, shown: int = 8) -> str:
        """One line: what was loaded and every kind of skipped tensor (the first ``shown`` of each by name)."""

        def some(names: list[str]) -> str:
            return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")

        parts = [f"{self.source}: loaded {self.loaded} tensors"]
        if self.mismatched:
            parts.append(f"skipped {len(self.mismatched)} of another shape (kept the architecture's init): "
                         + some([f"{n} {c} != {a}" for n, c, a in self.mismatched]))
        if self.missing:
            parts.append(f"{len(self.missing)} architecture tensors not in the checkpoint (kept their init): "
                         + some(self.missing))
        if self.unexpected:
            parts.append(f"ignored {len(self.unexpected)} checkpoint tensors with no place: " + some(self.unexpected))
        return "; ".join(parts)


def load_fitting(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> CheckpointFit:
    """Load the tensors of ``state`` whose name and shape match ``model``'s; report the rest.

    Refuses a checkpoint of which nothing fits (most likely the wrong architecture)."""
    own = model.state_dict()
    fit = CheckpointFit(source, 0)
    usable = {}
    for name, tensor in own.items():
        if name not in state:
            fit.missing.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            fit.mismatched.append((name, tuple(state[name].shape), tuple(tensor.shape)))
        else:
            usable[name] = state[name]
    fit.unexpected = [k for k in state if k not in own]
    if not usable:
        raise CheckpointMismatch(f"{source}: no tensor of the checkpoint fits the architecture by name and shape "
                                 f"(it has {len(state)}, e.g. '{next(iter(state), '-')}'); is it for another model?")
    model.load_state_dict(usable, strict=False)
    fit.loaded = len(usable)
    return fit


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
