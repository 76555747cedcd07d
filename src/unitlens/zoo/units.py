"""``enumerate_units(model)``: the analysable layers of a model, with type, depth and width.

A unit is one channel of a layer's output. Layers are taken in module-registration order. Depth and width are
properties of the layer in the whole model, whatever is selected: ``depth`` is the layer's index among the
model's analysable layers under the MIS convention (every Conv, Linear, BatchNorm, LayerNorm and GroupNorm but
the first and the last), ``rel_depth`` = depth / (n − 1) in [0, 1]; a kept first or last layer sits just outside
(−1/(n−1) and n/(n−1)), a user-named module of another type halfway between its neighbours. ``rel_width`` is the
width over the widest analysable layer of the same type in the model. So the same layer has the same depth and
width in every atlas of the model, and cross-atlas tables compare like with like.

A model that runs some module several times per forward records each call as a layer ``NAME@i``; its depths count
the analysable layers in the order the forward runs them, each call one layer (``place_in_call_order``).
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from unitlens.errors import BadInput

if TYPE_CHECKING:  # torch is imported when a model is enumerated; reading LayerInfo from an atlas needs none
    from torch import nn

LAYER_TYPES = ("Conv", "Linear", "BatchNorm", "LayerNorm", "GroupNorm")


@dataclass(frozen=True)
class LayerInfo:
    """One analysed layer. ``channel_dim`` is 1 for (B, C, ...) outputs and -1 for (B, ..., C) outputs."""

    name: str
    type: str
    depth: int
    rel_depth: float
    width: int | None
    rel_width: float | None
    channel_dim: int

    def as_dict(self) -> dict:
        """The JSON form (as stored in the manifest's ``layers``).

        Returns
        -------
        dict
            Every field by name.
        """
        return asdict(self)


def layer_type(module: nn.Module) -> str | None:
    """The unit type of a module, or None if it is not analysed by default."""
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.conv import _ConvNd

    if isinstance(module, _ConvNd):
        return "Conv"
    if isinstance(module, nn.Linear):
        return "Linear"
    if isinstance(module, _BatchNorm):
        return "BatchNorm"
    if isinstance(module, nn.LayerNorm):
        return "LayerNorm"
    if isinstance(module, nn.GroupNorm):
        return "GroupNorm"
    return None


def _width(module: nn.Module) -> int | None:
    from torch import nn

    for attr in ("out_channels", "out_features", "num_features", "num_channels"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    return None


def channel_dim_of(output: Any, declared: int, width: int | None = None) -> int:
    """The channel dimension of a layer ``output``: ``declared`` (``LayerInfo.channel_dim``) when known, unless
    the module's declared ``width`` (``LayerInfo.width``) fits the other end only: a LayerNorm or Linear of
    channel-first maps, a norm of channel-last (B, H, W, C) maps (timm's ConvNeXt, Swin).

    0 means unknown (a user-named module): 4-D maps are NCHW unless they look like (B, H, W, C) (equal H and W
    before a different last dim, as in a Swin block's output); anything else is channel-last.
    """
    if output.ndim > 2 and width:
        ends = {1: output.shape[1], -1: output.shape[-1]}
        fits = [dim for dim, size in ends.items() if size == width]
        if len(fits) == 1:
            return fits[0]
    if declared:
        return declared
    if output.ndim == 4:
        return -1 if output.shape[1] == output.shape[2] != output.shape[3] else 1
    return -1


def _channel_dim(module: nn.Module, kind: str) -> int:
    # timm's LayerNorm2d normalises channels of NCHW maps; plain LayerNorm and Linear act on the last dim.
    if kind == "Linear" or (kind == "LayerNorm" and not type(module).__name__.endswith("2d")):
        return -1
    return 1


def enumerate_units(
    model: nn.Module,
    types: Sequence[str] = LAYER_TYPES,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    skip_first_last: bool = True,
) -> list[LayerInfo]:
    """List the layers to analyse.

    Parameters
    ----------
    model : torch.nn.Module
        The model (weights are not needed: a meta-device model works).
    types : sequence of str
        Layer types to consider, from ``LAYER_TYPES`` (Conv, Linear, BatchNorm, LayerNorm, GroupNorm).
    include : iterable of str, optional
        Module names or globs (``blocks.*.conv_pw``) to keep. A name that is not of a listed type is analysed as
        type ``Other`` (width known after a forward pass).
    exclude : iterable of str, optional
        Module names or globs to leave out.
    skip_first_last : bool
        Drop the model's first and last layer of the listed types (the MIS convention).

    Returns
    -------
    list of LayerInfo
        The chosen layers in module order, with depth, width (number of units) and channel dimension.

    Raises
    ------
    BadInput
        If a type is unknown, an ``include`` pattern matches no module, or nothing is selected.
    """
    unknown = sorted(set(types) - set(LAYER_TYPES))
    if unknown:
        raise BadInput(f"unknown layer type(s) {unknown}; choose from {list(LAYER_TYPES)}")
    modules = dict(model.named_modules())
    candidates: list[tuple[str, nn.Module, str]] = [(n, m, kind) for n, m in modules.items()
                                                    if n and (kind := layer_type(m)) is not None and kind in types]
    if skip_first_last and len(candidates) > 2:
        candidates = candidates[1:-1]
    chosen = candidates
    if include is not None:
        patterns = list(include)
        chosen = [c for c in candidates if any(fnmatch.fnmatchcase(c[0], p) for p in patterns)]
        taken = {c[0] for c in chosen}
        for p in patterns:
            if p in modules and p and p not in taken:
                chosen.append((p, modules[p], layer_type(modules[p]) or "Other"))
            elif not any(fnmatch.fnmatchcase(n, p) for n in modules if n):
                raise BadInput(f"layer '{p}' matches no module of the model; list them with unitlens layers")
        order = {n: i for i, n in enumerate(modules)}
        chosen.sort(key=lambda c: order[c[0]])
    if exclude is not None:
        patterns = list(exclude)
        chosen = [c for c in chosen if not any(fnmatch.fnmatchcase(c[0], p) for p in patterns)]
    if not chosen:
        raise BadInput("no layer selected: check the types, include and exclude options")
    place = _model_places(modules)
    widths = {name: _width(m) if kind != "Other" else None for name, m, kind in chosen}
    return [
        LayerInfo(
            name=name,
            type=kind,
            depth=place.depth(name),
            rel_depth=place.rel_depth(name),
            width=widths[name],
            rel_width=_relative(widths[name], place.widest.get(kind)),
            channel_dim=_channel_dim(m, kind) if kind != "Other" else 0,
        )
        for name, m, kind in chosen
    ]


def analysable_names(model: nn.Module) -> list[str]:
    """The names of every module of the analysable layer types, in registration order."""
    return [n for n, m in model.named_modules() if n and layer_type(m) is not None]


def place_in_call_order(layers: Sequence[LayerInfo], trace: Sequence[str]) -> list[LayerInfo]:
    """``layers`` with the depth of a model that runs some module several times per forward, sorted by it.

    ``trace`` names the analysable layers in the order the forward runs them (``NAME@i`` for each call of a
    repeated module); depth is the index in it but the first and the last (which sit at -1 and n, as in
    ``enumerate_units``). A layer not in it (a user-named module of another type) keeps its depth.
    """
    reference = list(trace[1:-1]) if len(trace) > 2 else list(trace)
    n = len(reference)
    index = {name: i for i, name in enumerate(reference)}
    if len(trace) > 2:
        index.update({trace[0]: -1, trace[-1]: n})
    placed = [replace(info, depth=index[info.name], rel_depth=index[info.name] / (n - 1) if n > 1 else 0.0)
              if info.name in index else info for info in layers]
    return sorted(placed, key=lambda info: info.rel_depth)


def _relative(width: int | None, widest: int | None) -> float | None:
    return width / widest if width and widest else None


@dataclass
class _Places:
    """Depth and width references of one model: the MIS-convention layer list and the widest layer per type."""

    order: dict[str, int]  # module name -> registration index
    reference: list[str]  # the analysable layers but the first and last, in order
    widest: dict[str, int]

    def __post_init__(self) -> None:
        self.index = {name: i for i, name in enumerate(self.reference)}

    def _before(self, name: str) -> int:
        """How many reference layers are registered before module ``name``."""
        at = self.order[name]
        return sum(1 for r in self.reference if self.order[r] < at)

    def depth(self, name: str) -> int:
        if name in self.index:
            return self.index[name]
        before = self._before(name)
        return -1 if before == 0 else before

    def rel_depth(self, name: str) -> float:
        n = len(self.reference)
        if n < 2:
            return 0.0
        if name in self.index:
            return self.index[name] / (n - 1)
        before = self._before(name)
        position = -1.0 if before == 0 else (float(n) if before == n else before - 0.5)
        return position / (n - 1)


def _model_places(modules: dict[str, nn.Module]) -> _Places:
    every = [(n, m, kind) for n, m in modules.items() if n and (kind := layer_type(m)) is not None]
    reference = [n for n, _, _ in (every[1:-1] if len(every) > 2 else every)]
    widest: dict[str, int] = {}
    for _, m, kind in every:
        width = _width(m)
        if width is not None:
            widest[kind] = max(widest.get(kind, 0), width)
    return _Places({n: i for i, n in enumerate(modules)}, reference, widest)
