"""The options of the probe pass and of unit labelling: ``ProbeOptions`` (``record_probe``, ``unitlens probe``),
``LabelOptions`` (``label_units``, ``unitlens lens label``) and ``EvaluationOptions`` (``evaluate_labels``,
``unitlens lens evaluate-labels``). The labellers' own settings are written once, in ``LabellerOptions``, which
both labelling classes extend."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.errors import BadInput
from unitlens.lens.defaults import IMAGE_NULL, IMAGE_NULLS, LABEL_THRESHOLD, TEXT_NULL, TEXT_NULLS
from unitlens.options import Options, flag_of, option
from unitlens.probe.defaults import (
    BASELINE,
    BATCH_SIZE,
    BEAM,
    HOLDOUT,
    LENGTH,
    MAX_ACTIVATIONS,
    METHODS,
    MIN_SUPPORT,
    PROBE_NAME,
    SEED,
    TOP_K,
)
from unitlens.recording.defaults import SPATIAL
from unitlens.zoo.options import channels_last_option, device_option

LABELLING_METHODS = (*METHODS, BASELINE)


@dataclass(frozen=True)
class ProbeOptions(Options):
    """Which layers the probe pass records, under which name, and how it runs (``batch_size``, ``device`` and
    ``channels_last`` change no activation beyond float rounding)."""

    layers: tuple[str, ...] | None = option(
        None, "Layer names or globs to probe (comma-separated on the command line; default: every recorded layer "
              "of the model; derived layers have no module to hook).", metavar="NAMES")
    name: str = option(PROBE_NAME, "Name of this probe set in the atlas (several can be kept; recording one again "
                                   "replaces it and its labels).")
    columns: tuple[str, ...] | None = option(None, "Concept columns of a CSV probe set (default: all but path).",
                                             metavar="NAMES")
    spatial: str | None = option(None, "Pooling of conv maps (default: the atlas's own).", choices=SPATIAL)
    batch_size: int = option(BATCH_SIZE, "Images per forward pass.", min=1)
    device: str | None = device_option()
    channels_last: bool = channels_last_option()
    max_activations: int = option(MAX_ACTIVATIONS, "Refuse passes of more units x images than this (4 bytes each, "
                                                   "in memory and on disk).", min=1)


@dataclass(frozen=True)
class LabellerOptions(Options):
    """What every labeller reads (concepts, probe set, layers, backend) and each one's own settings; the base of
    ``LabelOptions`` and ``EvaluationOptions``."""

    concepts: str = option(
        "probe", "Concepts to label with: probe (the probe set's concept names as text), probe-images (its images "
                 "per concept, no text tower needed), a text file (one concept per line) or a folder of concept "
                 "image folders.", metavar="SOURCE")
    probe: str = option(PROBE_NAME, "Probe set (from unitlens probe) of the methods that read probe images.")
    layers: tuple[str, ...] | None = option(None, "Layer names or globs (comma-separated on the command line; "
                                                  "default: every probed, or for semanticlens every embedded, "
                                                  "layer).", metavar="NAMES")
    backend: str | None = option(None, "Embedding backend of semanticlens and clip-dissect (default: the atlas's "
                                       "lens backend, offline-vl when there are several).")
    device: str | None = device_option()
    threshold: float = option(LABEL_THRESHOLD, "semanticlens: units whose best alignment is below this get none.")
    top_k: int = option(TOP_K, "clip-dissect: images in a unit's soft top set.", min=1)
    length: int = option(LENGTH, "invert: concepts per formula at most.", min=1)
    beam: int = option(BEAM, "invert: formulas kept per unit and search step.", min=1)
    min_support: int = option(MIN_SUPPORT, "invert: probe images a formula must hold on at least (the reference "
                                           "implementation: 1).", min=1)
    seed: int = option(SEED, "random: seed of the chance baseline's picks (and, when evaluating, of the held-out "
                             "split).")


# the settings only one method reads: giving one to another method is an error
OWN_OPTIONS = {"threshold": "semanticlens", "parents": "semanticlens", "text_null": "semanticlens",
               "image_null": "semanticlens", "top_k": "clip-dissect", "length": "invert", "beam": "invert",
               "min_support": "invert", "seed": BASELINE}


@dataclass(frozen=True)
class LabelOptions(LabellerOptions):
    """One labelling method and its settings; the labels go to the atlas's label store."""

    method: str = option("semanticlens", "semanticlens (θ against concept probes), clip-dissect (soft-WPMI on a "
                                         "probe set), invert (the best formula of probe concepts by AUC) or random "
                                         "(a chance baseline).", choices=LABELLING_METHODS)
    parents: str | None = option(None, "semanticlens with a concept file or folder: YAML/JSON concept -> parent "
                                       "mapping (units are also counted per parent).", metavar="FILE")
    text_null: str = option(TEXT_NULL, "semanticlens with a concept file: null of text concepts.", choices=TEXT_NULLS)
    image_null: str = option(IMAGE_NULL, "semanticlens with a concept folder: null of image concepts.",
                             choices=IMAGE_NULLS)

    def validate(self) -> None:
        """Refuse an option of another labelling method than ``method``."""
        for name in self.changed():
            owner = OWN_OPTIONS.get(name)
            if owner is not None and owner != self.method:
                raise BadInput(f"{name} ({flag_of(self.spec(name))}) is an option of the {owner} method, not of "
                               f"{self.method}")


@dataclass(frozen=True)
class EvaluationOptions(LabellerOptions):
    """Which methods to judge, on which held-out share of the probe images."""

    methods: tuple[str, ...] = option(LABELLING_METHODS, "Methods to compare (random: the chance baseline).",
                                      choices=LABELLING_METHODS, flag="--method", metavar="METHODS")
    holdout: float = option(HOLDOUT, "Share of the probe images held out to judge the labels.",
                            check=lambda v: None if 0 < v < 1 else "must lie strictly between 0 and 1")
    figure: bool = option(True, "Draw the faithfulness figure beside the tables.")

    def validate(self) -> None:
        """Refuse an empty list of methods."""
        if not self.methods:
            raise BadInput(f"methods (--method) names no method; choose from {', '.join(LABELLING_METHODS)}")
