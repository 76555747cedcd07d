"""One small interface for the unit labellers, and their registry (``LABELLERS``, ``labeller``).

A labeller looks at a probe set (only the images it is allowed to see: all of them for ``unitlens lens label``,
the labelling split for ``evaluate-labels``) and returns, for every unit of the layers asked, a label or
``none`` and its own score:

- ``semanticlens``: the concept of the largest a = cos(θ, p) − cos(θ, null) (``unitlens.lens.label``), score a;
- ``clip-dissect``: the concept of the largest soft-WPMI (``unitlens.probe.clip_dissect``), score soft-WPMI;
- ``invert``: the formula of the largest AUC (``unitlens.probe.invert``), score AUC on the images it saw;
- ``random``: a seeded random concept per unit (the chance level), no score.

A labeller's result is one table: layer, unit, label, formula (JSON, see ``unitlens.probe.formulas``), score.
``unitlens.probe.labelling.label_units`` runs one and stores its labels; ``evaluate_labels`` judges them.

Labels from the probe set's own concepts need contrast: images with and without the concept among those the
labeller sees (``LabelContext.contrasting``). A probe set of one class (every image shows the same concepts) is
refused; a concept true on every image (or none) is left out, with one warning naming it.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from unitlens.atlas.labels import NO_LABEL
from unitlens.errors import BadInput
from unitlens.probe import formulas
from unitlens.probe.defaults import BASELINE, SEED
from unitlens.probe.store import ProbeStore
from unitlens.registry import Registry

COLUMNS = ["layer", "unit", "label", "formula", "score"]


@dataclass
class LabelContext:
    """What a labeller may use: the probe set, the rows (images) it may see, the concepts and the backend.

    ``concepts``: ``"probe"`` (the probe set's concept names as text), ``"probe-images"`` (each concept's probe
    images, of the visible rows, averaged in the backend's space), a text file or folder of concept folders (as
    ``unitlens lens label`` takes them), or a list of text concepts.
    """

    store: ProbeStore
    rows: np.ndarray
    concepts: str | Path | list[str] = "probe"
    backend: Any = None  # a Backend or its name
    device: Any = None
    progress: bool = False
    _acts: dict = field(default_factory=dict, repr=False)
    _warned: bool = field(default=False, init=False, repr=False)

    def activations(self, layer: str) -> torch.Tensor:
        """(U, n) activations of ``layer`` on the visible rows."""
        if layer not in self._acts:
            self._acts[layer] = self.store.activations(layer)[:, torch.as_tensor(self.rows, dtype=torch.long)]
        return self._acts[layer]

    @property
    def membership(self) -> np.ndarray:
        """(n, K) concept membership of the visible rows."""
        return self.store.membership[self.rows]

    def n_units(self, layer: str) -> int:
        return int(self.store.meta["layers"][layer])

    def contrasting(self, names: Sequence[str] | None = None, what: str = "labels are picked from",
                    warn: bool = True) -> list[str]:
        """The probe concepts among ``names`` (default: all) that hold on some visible images and not on others.

        Refuses (``BadInput``) a probe set whose visible images are all of one class, and warns (``warn``) once per
        context about the constant concepts it leaves out. ``what`` says which images these are, for the messages."""
        have = self.store.concepts
        names = list(have) if names is None else list(names)
        n = len(self.rows)
        counts = dict(zip(have, self.membership.sum(0).tolist()))
        if not any(0 < k < n for k in counts.values()):
            shown = ", ".join(c for c in have if counts[c] == n) or "no concept"
            raise BadInput(
                f"probe set '{self.store.name}' of {self.store.atlas.path} has one class over the {n} images "
                f"{what}: every one shows {shown} and nothing else, so no label can tell a unit's images from "
                "others; labels need images with and without each concept: add images of other concepts (or of "
                "none, loose in the probe folder) and run unitlens probe again")
        constant = [c for c in names if not 0 < counts[c] < n]
        if constant and warn and not self._warned:
            self._warned = True
            listed = ", ".join(f"{c} ({'all' if counts[c] == n else 'none'} of them)" for c in constant)
            warnings.warn(f"probe set '{self.store.name}': concept(s) {listed} hold on all or none of the {n} images "
                          f"{what}; they are left out of the labels (a concept true on every image tells nothing "
                          "about a unit, and cannot be judged)", stacklevel=3)
        return [c for c in names if c not in constant]


def varying(acts: torch.Tensor) -> torch.Tensor:
    """Units whose activation is not constant over the visible images (the others have no ranking)."""
    return torch.nonzero((acts.amax(1) - acts.amin(1)) > 0).flatten()


def layer_frame(layer: str, n_units: int, units, labels: list[str], scores) -> pd.DataFrame:
    """The labeller's table for one layer: every unit, ``none`` (formula "") where ``units`` has no label."""
    lab = np.full(n_units, NO_LABEL, dtype=object)
    sc = np.full(n_units, np.nan)
    units = np.asarray(units, dtype=np.int64)
    lab[units] = labels
    sc[units] = np.asarray(scores, dtype=np.float64)
    form = [formulas.to_json(formulas.single(x)) if x != NO_LABEL else "" for x in lab]
    return pd.DataFrame({"layer": layer, "unit": np.arange(n_units), "label": lab, "formula": form, "score": sc})


class Labeller(ABC):
    """Gives every unit of a layer a label (or none) and a score of its own kind (``score_name``).

    ``settings``: the fields of ``LabellerOptions`` its constructor takes (``labeller(method, options)`` passes
    them). ``backend``: the name of the embedding backend its last ``label`` used ("" for none)."""

    name: str
    score_name: str
    settings: tuple[str, ...] = ()
    backend: str = ""

    @abstractmethod
    def label(self, ctx: LabelContext, layers: list[str]) -> pd.DataFrame:
        """Columns layer, unit, label, formula, score; one row per unit of ``layers``."""


class RandomLabeller(Labeller):
    """A uniformly random probe concept for every varying unit (seeded): the chance level of faithfulness."""

    name, score_name, settings = BASELINE, "none", ("seed",)

    def __init__(self, seed: int = SEED):
        self.seed = seed

    def label(self, ctx: LabelContext, layers: list[str]) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        concepts = ctx.contrasting()
        frames = []
        for layer in layers:
            units = varying(ctx.activations(layer)).numpy()
            picks = [concepts[i] for i in rng.integers(0, len(concepts), len(units))]
            frames.append(layer_frame(layer, ctx.n_units(layer), units, picks, np.full(len(units), np.nan)))
        return pd.concat(frames, ignore_index=True)


LABELLERS: Registry[type[Labeller]] = Registry("labelling method")
LABELLERS.register(BASELINE, RandomLabeller)
LABELLERS.lazy("semanticlens", "unitlens.probe.lens_labels")
LABELLERS.lazy("clip-dissect", "unitlens.probe.clip_dissect")
LABELLERS.lazy("invert", "unitlens.probe.invert")


def labeller(method: str, options: Any = None, **params: Any) -> Labeller:
    """The labeller called ``method`` (``semanticlens``, ``clip-dissect``, ``invert``, ``random``), built from its
    settings in ``options`` (a ``LabellerOptions``; default: its defaults) and ``params`` (its constructor's keyword
    arguments, which override them; an unknown one is an error)."""
    cls = LABELLERS.get(method)
    chosen = {name: getattr(options, name) for name in cls.settings} if options is not None else {}
    try:
        return cls(**{**chosen, **params})
    except TypeError as err:
        raise BadInput(f"method '{method}' does not take these options: {err}") from err
