"""SemanticLens on an atlas: concept examples, θ per unit, the vector table, search / label / compare / measures.

Functions work on atlas paths (or ``Atlas``/``LensStore`` objects); ``Lens`` bundles them for one atlas and
backend::

    lens = Lens("atlas/lite0-demo")            # backend DEFAULT_LENS_BACKEND = "offline-vl"
    lens.embed(layers="blocks.6.0.conv_pwl", m=30, crop="activation")
    lens.search(text="star").frame             # or images=["demo/images/transportation"]
    lens.label("demo/images").counts
"""
from __future__ import annotations

from unitlens.lens.analysis import (LABEL_THRESHOLD, CompareResult, LabelResult, MeasuresResult, SearchResult,
                                    compare, label, measures, search, stored_labels)
from unitlens.lens.embed import EmbedResult, embed_atlas
from unitlens.lens.examples import (ACTIVATION_THRESHOLD, ConceptExamples, CropContext, LensError,
                                    activation_boxes, crop_examples, crop_modes, input_geometry,
                                    register_crop_mode, select_examples)
from unitlens.lens.probes import (TEMPLATES, ConceptSet, Probe, image_probe, load_concepts, load_parents,
                                  text_probe, text_probes)
from unitlens.lens.store import DEFAULT_LENS_BACKEND, LayerLens, LensStore

__all__ = [
    "ACTIVATION_THRESHOLD", "DEFAULT_LENS_BACKEND", "LABEL_THRESHOLD", "TEMPLATES", "CompareResult",
    "ConceptExamples", "ConceptSet", "CropContext", "EmbedResult", "LabelResult", "LayerLens", "Lens", "LensError",
    "LensStore", "MeasuresResult", "Probe", "SearchResult", "activation_boxes", "compare", "crop_examples",
    "crop_modes", "embed_atlas", "image_probe", "input_geometry", "label", "load_concepts", "load_parents",
    "measures", "register_crop_mode", "search", "select_examples", "stored_labels", "text_probe", "text_probes",
]


class Lens:
    """One atlas seen through one backend. ``backend`` is a name or a ``Backend`` instance (kept for probes)."""

    def __init__(self, atlas, backend=DEFAULT_LENS_BACKEND, device=None):
        from unitlens.atlas import Atlas

        self.atlas = Atlas.open(atlas)
        self.backend = backend
        self.device = device

    def _backend(self):
        from unitlens.backends import as_backend

        if isinstance(self.backend, str):
            self.backend = as_backend(self.backend, self.device)
        return self.backend

    @property
    def store(self) -> LensStore:
        return LensStore(self.atlas, self._backend().name)

    def embed(self, **kwargs) -> EmbedResult:
        return embed_atlas(self.atlas, self._backend(), device=self.device, **kwargs)

    def search(self, text=None, images=None, **kwargs) -> SearchResult:
        return search(self.store, text=text, images=images, backend=self._backend(), **kwargs)

    def label(self, concepts, **kwargs) -> LabelResult:
        return label(self.store, concepts, backend=self._backend(), **kwargs)

    def compare(self, other, **kwargs) -> CompareResult:
        return compare(self.atlas, other.atlas if isinstance(other, Lens) else other, backend=self._backend().name,
                       **kwargs)

    def measures(self, **kwargs) -> MeasuresResult:
        return measures(self.store, **kwargs)
