"""SemanticLens on an atlas: concept examples, θ per unit, the vector table, search / label / compare / measures.

Functions work on atlas paths (or ``Atlas``/``LensStore`` objects) and take their step's options class
(``EmbedOptions``, ``SearchOptions``, ...) or its fields as keywords; ``Lens`` bundles them for one atlas and
backend::

    lens = Lens("atlas/lite0-demo")            # backend DEFAULT_LENS_BACKEND = "offline-vl"
    lens.embed(layers=["blocks.6.0.conv_pwl"], m=30, crop="activation")
    lens.search(text="star").frame             # or images=["demo/images/transportation"]
    lens.label("demo/images").counts
    lens.unit("blocks.6.0.conv_pwl", 12).plot()

``clarity``, ``polysemanticity`` and ``redundancy`` work on tensors of your own (``unitlens.lens.unit_measures``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.lens.analysis import (
        CompareResult,
        LabelResult,
        MeasuresResult,
        SearchResult,
        compare,
        label,
        measures,
        search,
    )
    from unitlens.lens.crops import (
        CropContext,
        activation_boxes,
        crop_examples,
        crop_modes,
        register_crop_mode,
    )
    from unitlens.lens.defaults import (
        ACTIVATION_THRESHOLD,
        COMPARE_THRESHOLD,
        DEFAULT_LENS_BACKEND,
        LABEL_THRESHOLD,
        M,
    )
    from unitlens.lens.embed import EmbedResult, embed_units
    from unitlens.lens.examples import ConceptExamples, select_examples
    from unitlens.lens.figures import LensFigures, plot_lens, plot_unit
    from unitlens.lens.lens import Lens, LensUnit
    from unitlens.lens.options import (
        CompareOptions,
        EmbedOptions,
        LensPlotOptions,
        LensStepOptions,
        MeasuresOptions,
        SearchOptions,
    )
    from unitlens.lens.probes import (
        TEMPLATES,
        ConceptSet,
        Probe,
        image_probe,
        load_concepts,
        load_parents,
        text_probe,
        text_probes,
    )
    from unitlens.lens.store import LayerLens, LensStore
    from unitlens.lens.unit_measures import Redundancy, clarity, polysemanticity, redundancy

__all__ = [
    "ACTIVATION_THRESHOLD",
    "COMPARE_THRESHOLD",
    "CompareOptions",
    "CompareResult",
    "ConceptExamples",
    "ConceptSet",
    "CropContext",
    "DEFAULT_LENS_BACKEND",
    "EmbedOptions",
    "EmbedResult",
    "LABEL_THRESHOLD",
    "LabelResult",
    "LayerLens",
    "Lens",
    "LensFigures",
    "LensPlotOptions",
    "LensStepOptions",
    "LensStore",
    "LensUnit",
    "M",
    "MeasuresOptions",
    "MeasuresResult",
    "Probe",
    "Redundancy",
    "SearchOptions",
    "SearchResult",
    "TEMPLATES",
    "activation_boxes",
    "clarity",
    "compare",
    "crop_examples",
    "crop_modes",
    "embed_units",
    "image_probe",
    "label",
    "load_concepts",
    "load_parents",
    "measures",
    "plot_lens",
    "plot_unit",
    "polysemanticity",
    "redundancy",
    "register_crop_mode",
    "search",
    "select_examples",
    "text_probe",
    "text_probes",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CompareResult": "unitlens.lens.analysis",
        "LabelResult": "unitlens.lens.analysis",
        "MeasuresResult": "unitlens.lens.analysis",
        "SearchResult": "unitlens.lens.analysis",
        "compare": "unitlens.lens.analysis",
        "label": "unitlens.lens.analysis",
        "measures": "unitlens.lens.analysis",
        "search": "unitlens.lens.analysis",
        "ACTIVATION_THRESHOLD": "unitlens.lens.defaults",
        "COMPARE_THRESHOLD": "unitlens.lens.defaults",
        "DEFAULT_LENS_BACKEND": "unitlens.lens.defaults",
        "LABEL_THRESHOLD": "unitlens.lens.defaults",
        "M": "unitlens.lens.defaults",
        "EmbedResult": "unitlens.lens.embed",
        "embed_units": "unitlens.lens.embed",
        "ConceptExamples": "unitlens.lens.examples",
        "select_examples": "unitlens.lens.examples",
        "CropContext": "unitlens.lens.crops",
        "activation_boxes": "unitlens.lens.crops",
        "crop_examples": "unitlens.lens.crops",
        "crop_modes": "unitlens.lens.crops",
        "register_crop_mode": "unitlens.lens.crops",
        "TEMPLATES": "unitlens.lens.probes",
        "ConceptSet": "unitlens.lens.probes",
        "Probe": "unitlens.lens.probes",
        "image_probe": "unitlens.lens.probes",
        "load_concepts": "unitlens.lens.probes",
        "load_parents": "unitlens.lens.probes",
        "text_probe": "unitlens.lens.probes",
        "text_probes": "unitlens.lens.probes",
        "LayerLens": "unitlens.lens.store",
        "LensStore": "unitlens.lens.store",
        "Lens": "unitlens.lens.lens",
        "LensUnit": "unitlens.lens.lens",
        "LensFigures": "unitlens.lens.figures",
        "plot_lens": "unitlens.lens.figures",
        "plot_unit": "unitlens.lens.figures",
        "CompareOptions": "unitlens.lens.options",
        "EmbedOptions": "unitlens.lens.options",
        "LensPlotOptions": "unitlens.lens.options",
        "LensStepOptions": "unitlens.lens.options",
        "MeasuresOptions": "unitlens.lens.options",
        "SearchOptions": "unitlens.lens.options",
        "Redundancy": "unitlens.lens.unit_measures",
        "clarity": "unitlens.lens.unit_measures",
        "polysemanticity": "unitlens.lens.unit_measures",
        "redundancy": "unitlens.lens.unit_measures",
    },
)
