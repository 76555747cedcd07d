"""The live parts of the explorer (server only): text and image probes over an atlas's lens, and labelling its
units with a concept list, through ``unitlens.lens`` (``make_probe``, ``LensStore.search``, ``label`` with
``write=False``). The lens backend is loaded on first use and kept; nothing is written.
"""
from __future__ import annotations

import threading
import time

from PIL import Image

from unitlens.errors import BadInput, NotEmbedded
from unitlens.explorer.atlas_view import AtlasView, num
from unitlens.explorer.defaults import MAX_CONCEPTS, SEARCH_TOP


class LiveLens:
    """One backend instance per lens backend name, shared by the atlases served."""

    def __init__(self, device: str | None = "cpu"):
        self.device = device
        self._backends: dict[str, object] = {}
        self._lock = threading.Lock()

    def store(self, view: AtlasView):
        if view.lens is None:
            raise NotEmbedded(f"atlas {view.name} has no lens vectors to search; run unitlens lens embed {view.path}")
        return view.lens

    def backend(self, view: AtlasView):
        """The lens backend of ``view`` (loaded once; its weights checked against the stored vectors)."""
        from unitlens.lens.analysis import backend_for

        store = self.store(view)
        with self._lock:
            if store.backend not in self._backends:
                self._backends[store.backend] = backend_for(store, device=self.device)
            backend = self._backends[store.backend]
        store.check_weights(backend)
        return backend

    def loaded(self, view: AtlasView) -> bool:
        return view.lens is not None and view.lens.backend in self._backends

    def search(self, view: AtlasView, text: str | None = None, images: list[Image.Image] | None = None,
               top: int = SEARCH_TOP, layers: list[str] | None = None) -> dict:
        """The ``top`` units most aligned with a text probe or with the mean of ``images``, as unit cards."""
        from unitlens.lens.analysis import make_probe

        if text is not None and not text.strip():
            raise BadInput("the search text is empty; type a concept, e.g. 'star'")
        store = self.store(view)
        start = time.perf_counter()
        backend = self.backend(view)
        loaded = time.perf_counter()
        with self._lock:
            probe = make_probe(store, backend, text=text.strip() if text else None, images=images)
        hits = store.search(probe.query, layers, top=max(1, min(int(top), 500)), engine="exact")
        results = []
        for rank, (layer, unit, a) in enumerate(zip(hits["layer"], hits["unit"], hits["a"]), 1):
            card = view.card(layer, int(unit))
            results.append({**card, "rank": rank, "a": num(a, 4)})
        return {"atlas": view.name, "backend": store.backend, "probe": {"name": probe.name, "kind": probe.kind},
                "null": probe.null is not None, "results": results,
                "seconds": num(time.perf_counter() - loaded, 3), "load_seconds": num(loaded - start, 3)}

    def label(self, view: AtlasView, concepts: list[str], layers: list[str] | None = None, top: int = 12) -> dict:
        """Each unit's best concept of ``concepts`` (or none below the paper's threshold), computed, not stored:
        the count per concept and its best-aligned units."""
        from unitlens.lens.analysis import NO_LABEL, label

        concepts = list(dict.fromkeys(c.strip() for c in concepts if c.strip()))
        if not concepts:
            raise BadInput("the concept list is empty; give one concept per line")
        if len(concepts) > MAX_CONCEPTS:
            raise BadInput(f"{len(concepts)} concepts; the explorer labels with at most {MAX_CONCEPTS} at once")
        store = self.store(view)
        backend = self.backend(view)
        start = time.perf_counter()
        with self._lock:
            result = label(store, concepts, backend=backend, layers=layers, write=False)
        frame = result.frame
        rows = []
        for concept in [*concepts, NO_LABEL]:
            hit = frame[frame["label"] == concept].sort_values(["a", "layer", "unit"], ascending=[False, True, True])
            rows.append({"concept": concept, "units": int(len(hit)),
                         "best": [{**view.card(layer, int(unit)), "a": num(a, 4)} for layer, unit, a in
                                  zip(hit["layer"][:top], hit["unit"][:top], hit["a"][:top])]})
        return {"atlas": view.name, "backend": store.backend, "threshold": result.threshold, "concepts": rows,
                "n_units": int(len(frame)), "seconds": num(time.perf_counter() - start, 3)}
