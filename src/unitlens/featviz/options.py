"""``FeatvizOptions``: every option of feature visualisation (``visualize``, ``featviz_atlas``, ``unitlens
featviz``), with its default, check and help; ``FeatvizPlotOptions``: those of its figures (``plot_featviz``,
``unitlens plot featviz``)."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.errors import BadInput
from unitlens.featviz.defaults import (
    DIVERSITY,
    FIGURE_IMAGES,
    FIGURE_UNITS,
    LEARNING_RATE,
    MAX_PER_SIDE,
    MAX_SIZE,
    MAX_STEPS,
    MIN_SIZE,
    PER_SIDE,
    SEED,
    SIZE_ACCELERATOR,
    SIZE_CPU,
    STEPS_ACCELERATOR,
    STEPS_CPU,
)
from unitlens.featviz.selection import units_message
from unitlens.options import Options, option


@dataclass(frozen=True)
class FeatvizOptions(Options):
    """Which units to visualise and how the images are optimised. Neither ``batch_size`` nor ``device`` changes
    an image beyond float rounding; every other option does (a stored layer keeps the options it was made with)."""

    layers: tuple[str, ...] | None = option(
        None, "Layers to visualise: names or globs of the atlas's layers, derived layers L::NAME included "
              "(comma-separated on the command line).", metavar="NAMES")
    units: str | None = option(None, "Units of each layer: indices and ranges such as 0-15,40 (default: every "
                                     "unit).", check=units_message, metavar="LIST")
    steps: int | None = option(None, f"Optimisation steps (default: {STEPS_ACCELERATOR} on a GPU, {STEPS_CPU} on a "
                                     "CPU).", min=1, max=MAX_STEPS)
    size: int | None = option(None, f"Image side in pixels (default: {SIZE_ACCELERATOR} on a GPU, {SIZE_CPU} on a "
                                    "CPU).", min=MIN_SIZE, max=MAX_SIZE)
    per_side: int = option(PER_SIDE, "Images per unit and direction: K that drive the unit up and K that drive it "
                                     "down (MIS uses the first K of them as its explanations).", min=1,
                           max=MAX_PER_SIDE)
    seed: int = option(SEED, "Seed of every image's initial noise and random transforms (each image has its own "
                             "stream, so a unit's images do not depend on the batch it is in).", min=0)
    lr: float = option(LEARNING_RATE, "Adam's learning rate.", min=1e-6, max=10.0)
    diversity: float = option(DIVERSITY, "Weight of the diversity term (Lucid's: the summed cosine similarity of "
                                         "the Gram matrices of a unit's K images in one direction); 0 is off.",
                              min=0.0)
    transforms: bool = option(True, "Apply the robustness transforms (pad, jitter, scale, rotation) at every "
                                    "step.")
    decorrelate: bool = option(True, "Fourier-space image with 1/f scaling and decorrelated colours (the "
                                     "established recipe); --no-decorrelate optimises plain pixels.")
    batch_size: int | None = option(None, "Images per optimisation batch, whole units of 2 x --per-side images "
                                          "(default: 288 on a GPU, 36 on a CPU; at least one unit).", min=1)
    device: str | None = option(None, "cpu, cuda, cuda:1 ... (default: cuda when present).")
    force: bool = option(False, "Make the visualisations again where a layer has some made with other options.")

    def validate(self) -> None:
        if self.diversity > 0 and self.per_side < 2:
            raise BadInput("diversity (--diversity) compares a unit's images with each other: it needs per_side "
                           "(--per-side) of at least 2")

    def render_key(self) -> dict:
        """The options that shape the images (a stored layer is resumed only under the same ones)."""
        return {k: getattr(self, k) for k in ("steps", "size", "per_side", "seed", "lr", "diversity", "transforms",
                                              "decorrelate")}


def _units_text(value: object) -> object:
    """A list of unit indices as ``"3,7"`` (the form the option's check reads); other values as they are."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class FeatvizPlotOptions(Options):
    """Which scores, layers and units the feature visualisation figures show."""

    backend: str | None = option(None, "Which backend's MIS scores (needed when there are several).",
                                 metavar="NAME")
    layers: tuple[str, ...] | None = option(
        None, "Layer names or globs (comma-separated on the command line; default: every layer with "
              "visualisations).", metavar="NAMES")
    units: str | None = option(None, "Units for the sheets: indices and ranges such as 0-15,40 (default: where "
                                     "visualisations help most and least).", check=units_message,
                               convert=_units_text, metavar="LIST")
    n_units: int = option(FIGURE_UNITS, "Units per sheet when --units is not given.", min=1)
    k: int = option(FIGURE_IMAGES, "Images of each kind and direction per unit on the sheets.", min=1,
                    max=MAX_PER_SIDE)
