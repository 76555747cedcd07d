"""The options of the SemanticLens steps, each with its default, check and help.

- ``EmbedOptions``: ``embed_units``, ``Lens.embed``, ``unitlens lens embed``;
- ``SearchOptions``: ``search``, ``Lens.search``, ``unitlens lens search``;
- ``CompareOptions``: ``compare``, ``Lens.compare``, ``unitlens lens compare``;
- ``MeasuresOptions``: ``measures``, ``Lens.measures``, ``unitlens lens measures``;
- ``LensPlotOptions``: ``plot_lens``, ``Lens.plot``, ``unitlens plot lens``;
- ``LensStepOptions``: a study's ``[lens]`` table (embed, then measure: the fields of both).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unitlens.lens.defaults import (
    ACTIVATION_THRESHOLD,
    CARD_EXEMPLARS,
    CARDS,
    COLOUR,
    COLOURS,
    COMPARE_THRESHOLD,
    CROP,
    CROP_BATCH_SIZE,
    DEFAULT_LENS_BACKEND,
    EMBED_BATCH_SIZE,
    ENGINE,
    ENGINES,
    EXEMPLARS,
    IMAGE_NULLS,
    N_INIT,
    PROJECTION,
    PROJECTIONS,
    SEED,
    TEXT_NULLS,
    TOP,
    M,
)
from unitlens.options import Options, option
from unitlens.zoo.options import channels_last_option, device_option

PROBE_NULLS = tuple(dict.fromkeys(TEXT_NULLS + IMAGE_NULLS))  # template, none, dataset


def _crop_mode(value: str) -> str | None:
    """A registered crop mode (``register_crop_mode``), checked when the options are made."""
    from unitlens.lens.crops import crop_modes

    modes = crop_modes()
    return None if value in modes else f"must be one of {', '.join(modes)} (or a mode added with " \
                                       f"register_crop_mode), got {value!r}"


def _unit_indices(value: Any) -> Any:
    """Unit indices given as numbers become strings, the type of a list option."""
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else value


def _all_digits(value: tuple[str, ...] | None) -> str | None:
    bad = [v for v in value or () if not v.isdigit()]
    return f"must be unit indices (whole numbers), got {', '.join(bad)}" if bad else None


def stored_backend() -> Any:
    """The ``backend`` field of the steps that read an embedded atlas: which of its embeddings."""
    return option(None, "Which embedding of the atlas: a backend name or its start (default: the only one, or "
                        f"{DEFAULT_LENS_BACKEND} when the atlas has several).")


def embedded_layers(what: str) -> Any:
    """The ``layers`` field of the steps that read an embedded atlas."""
    return option(None, f"Layer names or globs {what} (comma-separated on the command line; default: every "
                        "embedded layer).", metavar="NAMES")


@dataclass(frozen=True)
class EmbedOptions(Options):
    """How each unit's concept examples are chosen, cropped and embedded (``batch_size``, ``crop_batch_size``,
    ``device`` and ``channels_last`` change no vector beyond float rounding)."""

    backend: str = option(DEFAULT_LENS_BACKEND, "Embedding backend: offline-vl (offline, with a text tower), "
                                                "offline, openclip:<model>/<weights>, hf:<name> or timm:<name>.")
    m: int = option(M, "Concept examples per unit (its most activating samples).", min=1)
    crop: str = option(CROP, "How concept examples are cropped: none (whole images), activation (to the unit's "
                             "activation map) or relevance (to its CRP relevance heatmap).", check=_crop_mode)
    crop_threshold: float = option(ACTIVATION_THRESHOLD, "Activation crops keep the pixels at or above this "
                                                         "fraction of the map's maximum.", min=0.0, max=1.0)
    layers: tuple[str, ...] | None = option(None, "Layer names or globs to embed (comma-separated on the command "
                                                  "line; default: every layer of the atlas).", metavar="NAMES")
    batch_size: int = option(EMBED_BATCH_SIZE, "Concept examples per embedding batch.", min=1)
    crop_batch_size: int = option(CROP_BATCH_SIZE, "Images per forward pass of the analysed model (crops).", min=1)
    device: str | None = device_option()
    channels_last: bool = channels_last_option()
    force: bool = option(False, "Embed again the layers already embedded with the same m, crop and threshold.")


@dataclass(frozen=True)
class SearchOptions(Options):
    """Where a search looks and what it returns."""

    top: int = option(TOP, "Units to return (best aligned first).", min=1)
    layers: tuple[str, ...] | None = embedded_layers("to search")
    backend: str | None = stored_backend()
    null: str | None = option(None, "Null vector subtracted from the probe: template (the default for text) or none; "
                                    "none (the default for images) or dataset (the atlas's mean image).",
                              choices=PROBE_NULLS)
    engine: str = option(ENGINE, "auto (LanceDB when every layer has a vector table, else exact), exact (in "
                                 "memory) or lancedb; both rank identically.", choices=ENGINES)
    exemplars: int = option(EXEMPLARS, "Concept-example files listed per unit.", min=1)
    device: str | None = device_option()


@dataclass(frozen=True)
class CompareOptions(Options):
    """Which layers of two embedded atlases are compared, and when a unit has no counterpart."""

    backend: str | None = option(None, "The embedding both atlases have (needed when they share several).")
    layers_a: tuple[str, ...] | None = embedded_layers("of atlas A")
    layers_b: tuple[str, ...] | None = embedded_layers("of atlas B")
    threshold: float = option(COMPARE_THRESHOLD, "Units of A whose best cosine to a unit of B is below this have no "
                                                 "counterpart (backend-dependent; the SemanticLens paper gives "
                                                 "none).", min=-1.0, max=1.0)


@dataclass(frozen=True)
class MeasuresOptions(Options):
    """Which layers are measured, the 2-means restarts of polysemanticity, and whether the scores are stored."""

    backend: str | None = stored_backend()
    layers: tuple[str, ...] | None = embedded_layers("to measure")
    seed: int = option(SEED, "Seed of the 2-means restarts (polysemanticity).")
    n_init: int = option(N_INIT, "2-means restarts per unit (polysemanticity); the lowest inertia is kept.", min=1)
    device: str | None = device_option()
    write: bool = option(True, "Write the scores to scores.parquet and the per-layer table to the lens store.")


@dataclass(frozen=True)
class LensPlotOptions(Options):
    """What the θ map of a layer shows and which unit cards are drawn beside it."""

    layer: str | None = option(None, "Layer to map (default: the last embedded layer).", metavar="NAME")
    backend: str | None = stored_backend()
    color: str = option(COLOUR, "label (the stored SemanticLens labels) or probe (the alignment with the text or "
                                "image probe, which also colours the map whenever one is given).", choices=COLOURS)
    projection: str = option(PROJECTION, "umap or pca (PCA also below 8 units).", choices=PROJECTIONS)
    cards: int = option(CARDS, "Unit cards to draw: the units best aligned with the probe, else the best-aligned "
                               "labelled units, else the first units.", min=0)
    units: tuple[str, ...] | None = option(None, "Unit indices to draw cards of (comma-separated on the command "
                                                 "line; overrides cards).", convert=_unit_indices,
                                           check=_all_digits, metavar="INDICES")
    exemplars: int = option(CARD_EXEMPLARS, "Concept examples per unit card.", min=1)


@dataclass(frozen=True)
class LensStepOptions(EmbedOptions, MeasuresOptions):
    """A study's ``[lens]`` table: the options of the embedding and of the measures after it."""

    def embed_options(self) -> EmbedOptions:
        """The embedding's part."""
        return _part(self, EmbedOptions)

    def measures_options(self) -> MeasuresOptions:
        """The measures' part (the backend is the embedding's)."""
        return _part(self, MeasuresOptions)


def _part(options: Options, cls: type[Options]) -> Any:
    names = {spec.name for spec in cls.specs()}
    return cls.from_mapping({k: v for k, v in options.as_dict().items() if k in names})
