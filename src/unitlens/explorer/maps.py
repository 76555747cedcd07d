"""The 2-d map of a layer's θ vectors (UMAP, as ``unitlens plot lens`` draws it), computed once per lens layer and
cached in the atlas's ``explorer`` result, stamped with a digest of the θ it projects (a re-embedded layer is
projected again)."""
from __future__ import annotations

import hashlib
import threading

import numpy as np
import torch

from unitlens.atlas.files import read_json, write_json
from unitlens.atlas.layout import backend_dirname, layer_stem
from unitlens.explorer.paths import inside
from unitlens.lens.store import LensStore


class ThetaMaps:
    """``get(layer)``: {layer, method, units, x, y} for the non-constant units of an embedded layer."""

    def __init__(self, store: LensStore):
        self.store = store
        self.root = store.atlas.derived_path("explorer", "maps", backend_dirname(store.backend))
        self._memory: dict[str, dict] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def stamp(self, layer: str) -> str:
        data = self.store.read_layer(layer)
        digest = hashlib.sha256(data.theta.contiguous().numpy().tobytes())
        digest.update(data.constant.numpy().tobytes())
        return digest.hexdigest()[:16]

    def cached(self, layer: str) -> dict | None:
        path = self.root / f"{layer_stem(layer)}.json"
        if layer in self._memory:
            return self._memory[layer]
        if path.is_file() and inside(self.store.atlas.path, path):
            found = read_json(path)
            if found.get("stamp") == self.stamp(layer):
                self._memory[layer] = found
                return found
        return None

    def get(self, layer: str) -> dict:
        with self._guard:
            lock = self._locks.setdefault(layer, threading.Lock())
        with lock:
            found = self.cached(layer)
            if found is not None:
                return found
            from unitlens.report.lens_plots import project

            data = self.store.read_layer(layer)
            keep = torch.nonzero(~data.constant).flatten()
            xy, method = project(data.vectors[keep].numpy(), "umap") if len(keep) else (np.zeros((0, 2)), "UMAP")
            result = {"layer": layer, "backend": self.store.backend, "method": method, "stamp": self.stamp(layer),
                      "units": keep.tolist(), "x": np.round(xy[:, 0].astype(float), 4).tolist(),
                      "y": np.round(xy[:, 1].astype(float), 4).tolist()}
            self._memory[layer] = result
            path = self.root / f"{layer_stem(layer)}.json"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if inside(self.store.atlas.path, path.parent):
                    write_json(path, result)
            except OSError:
                pass  # a read-only atlas: the map stays in memory
            return result
