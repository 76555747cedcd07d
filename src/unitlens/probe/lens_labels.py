"""The ``semanticlens`` labeller: today's ``unitlens.lens.label`` (θ of each unit against concept probes) behind
the labeller interface, with its concepts taken from a probe set (names as text, or the visible probe images).

It does not look at probe activations: θ comes from the atlas's own concept examples. Only the concept
probes built from probe images (``--concepts probe-images``) use probe images, and then only the visible ones.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from unitlens.atlas.labels import NO_LABEL
from unitlens.lens.analysis import backend_for, label
from unitlens.lens.defaults import LABEL_THRESHOLD
from unitlens.lens.probes import TEMPLATES
from unitlens.lens.store import LensStore
from unitlens.probe.concept_sources import probe_vectors
from unitlens.probe.labellers import LABELLERS, LabelContext, Labeller, layer_frame


class SemanticLensLabeller(Labeller):
    """Best concept by a = cos(θ, p) − cos(θ, null), ``none`` below ``threshold``; score a.

    ``theta``: optional per-layer replacement of the stored θ (U, D), e.g. the mean of the first m examples
    (the m ablation); ``templates``: the prompt templates of text concepts.
    """

    name, score_name, settings = "semanticlens", "a", ("threshold",)

    def __init__(self, threshold: float = LABEL_THRESHOLD, templates: Sequence[str] = TEMPLATES,
                 theta: dict | None = None):
        self.threshold = threshold
        self.templates = tuple(templates)
        self.theta = theta or {}

    def label(self, ctx: LabelContext, layers: list[str]) -> pd.DataFrame:
        name = ctx.backend if isinstance(ctx.backend, str) or ctx.backend is None else ctx.backend.name
        store = LensStore.open(ctx.store.atlas, name)
        self.backend = store.backend
        store.resolve(layers)
        backend = backend_for(store, ctx.backend, ctx.device)
        probes = probe_vectors(ctx, backend, self.name, self.templates, image_null=store.null_image(),
                               atlas=store.atlas)
        for layer, theta in self.theta.items():
            store.read_layer(layer).theta = theta  # in this in-memory copy only
        result = label(store, probes, backend=backend, threshold=self.threshold, layers=layers, write=False)
        frames = []
        for layer in layers:
            rows = result.frame[result.frame["layer"] == layer]
            labelled = rows["label"] != NO_LABEL
            frame = layer_frame(layer, store.read_layer(layer).theta.shape[0], rows["unit"][labelled],
                                list(rows["label"][labelled]), rows["a"][labelled])
            unlabelled = rows["unit"][~labelled].to_numpy()
            frame.loc[unlabelled, "score"] = rows["a"][~labelled].to_numpy()  # a below threshold, kept
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


LABELLERS.register("semanticlens", SemanticLensLabeller)
