"""``ModelOptions``: which model to load and how (name, random init, checkpoint, head), for every command and
study entry that names a model; ``device_option`` and ``channels_last_option``: the one ``device`` and
``channels_last`` field of every step that runs a model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unitlens.options import Options, option
from unitlens.zoo.defaults import DEFAULT_MODEL, RANDOM_SEED

if TYPE_CHECKING:
    from unitlens.zoo.factory import LoadedModel


@dataclass(frozen=True)
class ModelOptions(Options):
    """A model by name and how to load it; ``load()`` gives the ``LoadedModel``."""

    model: str | None = option(None, "efficientnet_lite0|1|2 (offline ImageNet weights), timm:<name> (a tag "
                                     "picks the weights and their preprocessing: timm:resnet50.a1_in1k, or "
                                     "resnet50.a1_in1k), torchvision:<name>, or the file of a saved module (default: "
                                     f"{DEFAULT_MODEL}; for a command that reads an atlas, the atlas's model).",
                               metavar="NAME")
    random: bool = option(False, "Random init instead of pretrained weights.", flag="--random")
    seed: int = option(RANDOM_SEED, "Seed of the --random weights (the same weights on every run).")
    checkpoint: str | None = option(None, "Local state dict (.pth/.pt/.bin/.safetensors) to load into the "
                                          "architecture.", metavar="FILE")
    num_classes: int | None = option(None, "Classes of the checkpoint's head (a fine-tuned model): timm and "
                                           "torchvision build the architecture with a head of that size.", min=1)
    checkpoint_strict: bool = option(True, "Fail on the first checkpoint tensor that does not fit (default), or "
                                           "load the tensors that fit by name and shape and list the skipped ones.")

    @property
    def name(self) -> str:
        """The model's name (the default model when none is given)."""
        return self.model or DEFAULT_MODEL

    def load(self, meta: bool = False) -> LoadedModel:
        """The model in eval mode with its preprocessing (``zoo.load_model`` with these options); ``meta``: its
        architecture without weights, on the meta device."""
        from unitlens import zoo  # through the package, where tests and users may replace it

        return zoo.load_model(self.name, pretrained=not self.random, checkpoint=self.checkpoint,
                              num_classes=self.num_classes, checkpoint_strict=self.checkpoint_strict, seed=self.seed,
                              meta=meta)


def device_option() -> Any:
    """The ``device`` field (default, help) of every options class whose step runs a model: written once here."""
    return option(None, "cpu, cuda, cuda:1 ... (default: cuda when present).", convert=str)


def channels_last_option() -> Any:
    """The ``channels_last`` field (default, help) of every options class whose step runs a model (record,
    relevance, audits): written once here."""
    return option(True, "Run the model in channels-last memory order (faster convolutions) where it allows it "
                        "(no 5-D weight).")
