"""``visualize(model, layers, units)``: feature visualisations of units of any ``nn.Module``, batched and truncated.

Per unit, ``per_side`` images optimised to drive it up and ``per_side`` to drive it down, from noise: the image
parameterisation of ``featviz.image_param`` (Fourier space, decorrelated colours), the robustness transforms of
``featviz.transforms`` at every step, Adam on the sum over images of ∓ the unit's value (``featviz.objectives``),
plus, when ``diversity`` > 0, Lucid's diversity penalty over each unit's images of one direction.

One optimisation batch holds whole units of one layer, both directions; every image has its own seed (from the
run's seed, the layer, the unit, the direction and the image's index), its own initial noise and its own
transforms, so an image does not depend on the batch it was made in. The forward stops after the batch's layer
(``runtime.OutputCapture``), and the model's weights take no gradient. Before any optimisation, one small forward
and backward per layer checks that every layer runs, that every chosen unit is inside it, and that a gradient
reaches the image. The activation each image reaches is measured on the image as returned (8 bits per channel,
untransformed).
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from unitlens.errors import BadInput
from unitlens.featviz.defaults import (
    BATCH_ACCELERATOR,
    BATCH_CPU,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SIZE_ACCELERATOR,
    SIZE_CPU,
    STEPS_ACCELERATOR,
    STEPS_CPU,
)
from unitlens.featviz.image_param import ImageBatch
from unitlens.featviz.objectives import ChannelReader, UnitReader, gradient_path
from unitlens.featviz.options import FeatvizOptions
from unitlens.featviz.selection import choose_units
from unitlens.featviz.transforms import RandomTransforms
from unitlens.options import takes_options
from unitlens.runtime import OutputCapture, Progress, first_tensor, pick_device, prepare_model

DIRECTIONS = {"top": 1, "bottom": -1}  # top: drive the unit up; bottom: drive it down


@dataclass(frozen=True)
class Target:
    """One image to make: which unit of which layer, which direction, which of the unit's images."""

    layer: str
    unit: int
    direction: str  # "top" or "bottom"
    index: int

    def seed(self, seed: int) -> int:
        """This image's own seed: a hash of the run's seed and the image's identity."""
        key = f"{seed}\0{self.layer}\0{self.unit}\0{self.direction}\0{self.index}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & (2**63 - 1)


def resolve(options: FeatvizOptions, device: torch.device) -> FeatvizOptions:
    """``options`` with steps, size and batch size chosen for the device where they were left open."""
    gpu = device.type != "cpu"
    return options.replace(steps=options.steps or (STEPS_ACCELERATOR if gpu else STEPS_CPU),
                           size=options.size or (SIZE_ACCELERATOR if gpu else SIZE_CPU),
                           batch_size=options.batch_size or (BATCH_ACCELERATOR if gpu else BATCH_CPU))


def unit_targets(layer: str, units: Sequence[int], per_side: int) -> list[Target]:
    """Every image of ``units``: per unit its top images, then its bottom images (a unit's images stay together)."""
    return [Target(layer, int(u), d, k) for u in units for d in DIRECTIONS for k in range(per_side)]


def batches_of(units: Sequence[int], per_side: int, batch_size: int) -> list[list[int]]:
    """Units in groups whose 2 x ``per_side`` images fill at most ``batch_size`` (at least one unit each)."""
    per = max(1, batch_size // (2 * per_side))
    return [list(units[s:s + per]) for s in range(0, len(units), per)]


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Within the block the model's parameters take no gradient (the backward computes the image's only)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def diversity_penalty(output: torch.Tensor, per_side: int) -> torch.Tensor:
    """Lucid's diversity term over groups of ``per_side`` consecutive images (one unit, one direction): per group the
    summed cosine similarity of every ordered pair's Gram matrices of the layer's channels, divided by the group
    size; summed over groups. Lower is more diverse."""
    out = first_tensor(output)
    if out.ndim == 4:
        feats = out.flatten(2)  # (n, C, HW)
    elif out.ndim == 3:
        feats = out.transpose(1, 2)  # (n, C, T)
    else:
        feats = out.reshape(out.shape[0], -1, 1)
    grams = torch.nn.functional.normalize((feats @ feats.transpose(1, 2)).flatten(1), dim=1)
    grams = grams.view(-1, per_side, grams.shape[1])
    sims = grams @ grams.transpose(1, 2)  # (groups, K, K)
    off = sims.sum((1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(1)
    return (off / per_side).sum()


class Renderer:
    """Optimises batches of ``Target`` images of one model whose units ``readers`` read.

    Parameters
    ----------
    model : torch.nn.Module
        The model (moved to the options' device, its parameters frozen while rendering).
    readers : dict
        Layer -> ``UnitReader`` (how a layer's output becomes unit values).
    options : FeatvizOptions
        The settings; resolved for the device (``steps``, ``size``, ``batch_size`` filled in).
    mean, std : sequence of float
        The model's input normalisation.
    """

    def __init__(self, model: nn.Module, readers: dict[str, UnitReader], options: FeatvizOptions,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.device = pick_device(options.device)
        self.options = resolve(options, self.device)
        self.steps, self.size = int(self.options.steps or 0), int(self.options.size or 0)
        self.batch_size = int(self.options.batch_size or 0)
        self.readers = readers
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.net = prepare_model(model, self.device)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def check(self, layer: str) -> int:
        """The number of units of ``layer``, after one forward and backward on a noise image.

        The pass shows that the layer runs at the chosen size and passes a gradient to the image.

        Parameters
        ----------
        layer : str
            A layer of ``readers``.

        Returns
        -------
        int
            The layer's number of units.

        Raises
        ------
        BadInput
            If the model fails at this size, or no (finite, non-zero) gradient reaches the image.
        """
        reader = self.readers[layer]
        gradient_path(reader, layer)
        size = self.size
        x = torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(0)).to(self.device)
        x.requires_grad_(True)
        with frozen(self.net), OutputCapture(self.net, [reader.module], detach=False) as capture:
            try:
                outputs = capture.run(self._input(x))
            except RuntimeError as err:
                raise BadInput(f"layer {layer}: the model fails on {size} x {size} images ({err}); choose another "
                               "--size") from err
            values = reader.all_units(outputs[reader.module])
            if not values.requires_grad:
                raise BadInput(f"layer {layer}: its output does not depend differentiably on the image (no gradient "
                               "path), so it cannot be optimised; choose another layer")
            values.float().sum().backward()
        if x.grad is None or not bool(torch.isfinite(x.grad).all()) or not bool(x.grad.abs().sum() > 0):
            raise BadInput(f"layer {layer}: no gradient reaches the image from its units (zero or non-finite), so "
                           "they cannot be optimised; choose another layer")
        return int(values.shape[1])

    def render(self, targets: Sequence[Target], on_step: Callable[[int], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Optimise ``targets`` (one layer, whole units) in one batch.

        Parameters
        ----------
        targets : sequence of Target
            The images to make, all of one layer.
        on_step : callable, optional
            Called with the step number after each optimisation step.

        Returns
        -------
        tuple of torch.Tensor
            (n, 3, S, S) uint8 images and the (n,) activation each reaches (measured on the 8-bit image,
            untransformed), on the CPU.

        Raises
        ------
        BadInput
            If the targets span several layers.
        """
        opts = self.options
        layers = {t.layer for t in targets}
        if len(layers) != 1:
            raise BadInput(f"one batch holds the units of one layer, got {sorted(layers)}")
        reader = self.readers[targets[0].layer]
        steps, size = self.steps, self.size
        generators = [torch.Generator().manual_seed(t.seed(opts.seed)) for t in targets]
        batch = ImageBatch(generators, size, opts.decorrelate, self.device)
        moves = RandomTransforms(generators, steps, self.device) if opts.transforms else None
        units = torch.tensor([t.unit for t in targets], device=self.device)
        signs = torch.tensor([float(DIRECTIONS[t.direction]) for t in targets], device=self.device)
        optimizer = torch.optim.Adam([batch.param], lr=opts.lr)
        with frozen(self.net), OutputCapture(self.net, [reader.module], detach=False) as capture:
            for step in range(steps):
                optimizer.zero_grad(set_to_none=True)
                x = batch.images()
                if moves is not None:
                    x = moves.apply(x, step)
                output = capture.run(self._input(x))[reader.module]
                loss = -(signs * reader.values(output, units).float()).sum()
                if opts.diversity > 0:
                    loss = loss + opts.diversity * diversity_penalty(output, opts.per_side)
                loss.backward()
                optimizer.step()
                if on_step is not None:
                    on_step(step + 1)
            images = (batch.images().detach() * 255).round().to(torch.uint8)
            with torch.no_grad():
                output = capture.run(self._input(images.float() / 255))[reader.module]
                reached = reader.values(output, units).float()
        return images.cpu(), reached.cpu()


@dataclass
class FeatvizResult:
    """Visualisations of units: ``images`` (n, 3, S, S) uint8 and one ``table`` row per image (layer, unit,
    direction, index, activation, seed), in the same order; ``options`` as resolved for the device."""

    images: torch.Tensor
    table: pd.DataFrame
    options: FeatvizOptions
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def image(self, i: int):
        """Image ``i`` as a PIL image.

        Parameters
        ----------
        i : int
            The row of ``table`` (and index into ``images``).

        Returns
        -------
        PIL.Image.Image
            The S x S RGB image.
        """
        from PIL import Image

        return Image.fromarray(self.images[i].permute(1, 2, 0).numpy())

    def unit_images(self, layer: str, unit: int, direction: str = "top") -> list:
        """A unit's images of one direction as PIL images, in index order.

        Parameters
        ----------
        layer : str
            The unit's layer.
        unit : int
            The unit's index.
        direction : str
            ``top`` (maximised) or ``bottom`` (minimised).

        Returns
        -------
        list of PIL.Image.Image
            Empty when the result holds no such images.
        """
        rows = self.table[(self.table["layer"] == layer) & (self.table["unit"] == unit)
                          & (self.table["direction"] == direction)].sort_values("index")
        return [self.image(i) for i in rows.index]


def table_rows(targets: Sequence[Target], reached: torch.Tensor, seed: int) -> pd.DataFrame:
    """One row per image: layer, unit, direction, index, activation (reached), seed."""
    return pd.DataFrame({"layer": [t.layer for t in targets], "unit": [t.unit for t in targets],
                         "direction": [t.direction for t in targets], "index": [t.index for t in targets],
                         "activation": reached.double().numpy(), "seed": [str(t.seed(seed)) for t in targets]})


@takes_options(FeatvizOptions)
def visualize(model: nn.Module, units: str | Sequence[int] | None = None, *, options: FeatvizOptions,
              readers: dict[str, UnitReader] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD, spatial: str = "mean", tokens: str = "mean",
              progress: bool = True) -> FeatvizResult:
    """Feature visualisations of units of every layer in ``options.layers`` of ``model``; no atlas needed.

    Images are optimised in [0, 1] and normalised before the model. Every layer and unit is checked (one small
    forward and backward each) before any optimisation.

    Parameters
    ----------
    model : torch.nn.Module
        The model; ``options.layers`` are its module names.
    units : str or sequence of int, optional
        Unit indices, or a spec such as ``"0-15,40"``; default ``options.units``, else every unit.
    options : FeatvizOptions
        Layers, steps, size, per_side and the other settings; its fields may also be given as keyword arguments.
    readers : dict, optional
        Layer -> ``UnitReader`` replacing the channel reader of that layer (a ``featviz.objectives.BasisReader``
        for basis features).
    mean, std : sequence of float
        The model's input normalisation (per RGB channel).
    spatial : str
        How a channel's (H, W) map becomes one value: ``mean`` or ``max`` over space, as a record pass does.
    tokens : str
        How a channel over tokens becomes one value: ``mean``, ``cls`` or ``max``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    FeatvizResult
        ``images`` (n, 3, S, S) uint8 and one ``table`` row per image (layer, unit, direction, index, activation
        reached, seed), in the same order.

    Raises
    ------
    BadInput
        If ``model`` is not a module, no layer is named, or a layer or unit cannot be optimised.
    """
    if model is None or not isinstance(model, nn.Module):
        raise BadInput(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not options.layers:
        raise BadInput("name the layers to visualise (layers=[...]; CLI: --layers)")
    t0 = time.perf_counter()
    readers = {**{layer: ChannelReader(layer, spatial=spatial, tokens=tokens) for layer in options.layers},
               **(readers or {})}
    renderer = Renderer(model, readers, options, mean, std)
    opts = renderer.options
    spec = units if units is not None else opts.units
    chosen = {layer: choose_units(spec, renderer.check(layer), layer) for layer in options.layers}
    parts, rows = [], []
    with Progress("featviz", sum(len(u) for u in chosen.values()), progress, unit="unit") as bar:
        for layer, units in chosen.items():
            for group in batches_of(units, opts.per_side, renderer.batch_size):
                targets = unit_targets(layer, group, opts.per_side)
                bar.describe(f"featviz {layer}")
                images, reached = renderer.render(targets)
                parts.append(images)
                rows.append(table_rows(targets, reached, opts.seed))
                bar.advance(len(group))
    table = pd.concat(rows, ignore_index=True) if rows else table_rows([], torch.zeros(0), opts.seed)
    images = torch.cat(parts) if parts else torch.zeros(0, 3, renderer.size, renderer.size, dtype=torch.uint8)
    return FeatvizResult(images, table, opts, time.perf_counter() - t0)
