"""``Lens``: one atlas seen through one backend, with the SemanticLens operations as methods."""
from __future__ import annotations

from unitlens.atlas import Atlas
from unitlens.backends import as_backend
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
from unitlens.lens.defaults import DEFAULT_LENS_BACKEND
from unitlens.lens.embed import EmbedResult, embed_atlas
from unitlens.lens.store import LensStore


class Lens:
    """One atlas seen through one backend. ``backend`` is a name or a ``Backend`` instance (kept for probes)."""

    def __init__(self, atlas, backend=DEFAULT_LENS_BACKEND, device=None):
        self.atlas = Atlas.open(atlas)
        self.backend = backend
        self.device = device

    def _backend(self):
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
