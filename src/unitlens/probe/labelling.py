"""``label_units(atlas, options)``: label every unit of some layers with one method and store the labels in the
atlas's label store (``unitlens.atlas.labels``), where the explorer, the attribution graph and the basis
comparison read them.

- ``semanticlens`` with a concept file or folder: ``unitlens.lens.label`` (θ of each unit against the concepts;
  counts per concept and parent, the units that align with none);
- every other case reads a probe set (``unitlens probe``): ``semanticlens`` with the probe set's concepts,
  ``clip-dissect``, ``invert`` and ``random`` through the labeller interface (``unitlens.probe.labellers``), on all
  of its images.

A label set is (method, backend, probe set): labelling again replaces that set's labels of the layers labelled.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unitlens import notebook
from unitlens.atlas import Atlas
from unitlens.atlas.labels import NO_LABEL, LabelStore, label_counts, set_name
from unitlens.errors import BadInput
from unitlens.lens.analysis import label, stored_rows
from unitlens.options import takes_options
from unitlens.probe.concept_sources import PROBE_IMAGES, PROBE_TEXT
from unitlens.probe.labellers import COLUMNS, LabelContext, labeller
from unitlens.probe.options import LabelOptions
from unitlens.probe.store import ProbeStore


@dataclass
class UnitLabels:
    """The labels of one method: ``frame`` has one row per unit (layer, unit, label, score, and formula where the
    method reads probe concepts; SemanticLens with a concept file adds runner_up, runner_up_score and parent),
    ``counts`` the units per label and layer."""

    method: str
    frame: pd.DataFrame
    counts: pd.DataFrame
    score_name: str
    backend: str = ""
    probe: str = ""
    parent_counts: pd.DataFrame | None = None
    unexpected: pd.DataFrame | None = None  # SemanticLens with a concept file: the units that align with none
    n_constant: int = 0  # SemanticLens with a concept file: constant units, left out
    path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> pd.DataFrame:
        """The units with a label, best score first."""
        rows = self.frame[self.frame["label"] != NO_LABEL]
        return rows.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)

    def _repr_html_(self) -> str:
        facts = {"units": len(self.frame), "labelled": len(self.labelled), "score": self.score_name or "none",
                 "stored in": self.path or "not stored"}
        return (notebook.header(f"labels: {set_name(self.method, self.backend, self.probe)}", facts)
                + notebook.table(self.labelled.drop(columns="formula", errors="ignore"), "best scored units")
                + notebook.table(self.counts, "units per label and layer"))


def _probe_store(atlas: Atlas, options: LabelOptions) -> ProbeStore:
    if options.method == "semanticlens" and options.probe not in ProbeStore.names(atlas):
        raise BadInput(f"semanticlens labels need concepts: --concepts a text file (one concept per line) or a folder "
                       f"of concept image folders, or a probe set (unitlens probe {atlas.path} --data PROBE_SPEC) for "
                       f"--concepts {PROBE_TEXT} or {PROBE_IMAGES}")
    return ProbeStore.open(atlas, options.probe)


@takes_options(LabelOptions)
def label_units(atlas: Atlas | str | Path, options: LabelOptions | None = None, *, write: bool = True,
                progress: bool = True) -> UnitLabels:
    """Label every unit of the chosen layers with ``options.method`` (see the module docstring).

    Parameters
    ----------
    atlas
        The atlas (a path or an ``Atlas``); the methods that read probe images need a probe set of it
        (``record_probe``), ``semanticlens`` its lens vectors (``unitlens lens embed``).
    options
        A ``LabelOptions``; any of its fields may also be given as a keyword argument (see below).
    write
        Store the labels in the atlas's label store (under the atlas's write lock, taken before any work).
    progress
        Show progress bars.

    Returns
    -------
    UnitLabels
        One row per unit of the labelled layers, the counts per label and layer, where they were stored.
    """
    options = options or LabelOptions()
    atlas = Atlas.open(atlas)
    if options.method == "semanticlens" and options.concepts not in (PROBE_TEXT, PROBE_IMAGES):
        res = label(atlas, options.concepts, backend=options.backend, threshold=options.threshold,
                    parents=options.parents, layers=list(options.layers) if options.layers else None,
                    text_null=options.text_null, image_null=options.image_null, write=write, device=options.device,
                    progress=progress)
        return UnitLabels("semanticlens", stored_rows(res.frame), res.counts, "a", backend=res.backend,
                          parent_counts=res.parent_counts, unexpected=stored_rows(res.unexpected),
                          n_constant=res.n_constant, path=res.path)
    if options.parents is not None:
        raise BadInput(f"parents (--parents) map the concepts of a concept file or folder; --concepts "
                       f"{options.concepts} labels with the probe set's own concepts")
    store = _probe_store(atlas, options)
    names = store.resolve(list(options.layers) if options.layers else None)
    ctx = LabelContext(store, np.arange(store.n_images), options.concepts, options.backend, options.device, progress)
    lab = labeller(options.method, options)
    with atlas.writing("lens label") if write else nullcontext():  # taken first: a busy atlas fails before the work
        frame = lab.label(ctx, names)[COLUMNS]
        path = LabelStore(atlas).write(frame, options.method, backend=lab.backend, probe=store.name,
                                       concepts=options.concepts, score_name=lab.score_name,
                                       options=options.as_dict()) if write else None
    labelled = frame[frame["label"] != NO_LABEL]
    notes = [f"{options.method} gives its labels no score (the chance baseline): the score column is missing (nan)"] \
        if len(labelled) and labelled["score"].isna().all() else []
    return UnitLabels(options.method, frame, label_counts(labelled, "label", names), lab.score_name,
                      backend=lab.backend, probe=store.name, path=path, notes=notes)
