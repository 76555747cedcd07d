"""Probe passes and labels you can trust: unit activations on a labelled probe set, three labellers behind one
interface (SemanticLens, CLIP-Dissect, INVERT) and the held-out faithfulness of their labels::

    probe_atlas("atlas/lite0-demo", "probe.csv", columns=["category"])        # unitlens probe
    label_units("atlas/lite0-demo", "invert")                                  # unitlens lens label --method invert
    evaluate_labels("atlas/lite0-demo").summary                                # unitlens lens evaluate-labels
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.probe.activations import ProbeResult, probe_atlas
    from unitlens.probe.clip_dissect import ClipDissect, soft_wpmi
    from unitlens.probe.faithfulness import Faithfulness, evaluate_labels
    from unitlens.probe.invert import Invert, beam_search
    from unitlens.probe.labellers import LabelContext, Labeller, label_units, labeller
    from unitlens.probe.lens_labels import SemanticLensLabeller
    from unitlens.probe.ranking import auc_by_ranks, row_ranks
    from unitlens.probe.spec import ProbeSpec, load_probe_spec
    from unitlens.probe.split import holdout_split
    from unitlens.probe.store import ProbeStore

__all__ = [
    "ClipDissect",
    "Faithfulness",
    "Invert",
    "LabelContext",
    "Labeller",
    "ProbeResult",
    "ProbeSpec",
    "ProbeStore",
    "SemanticLensLabeller",
    "auc_by_ranks",
    "beam_search",
    "evaluate_labels",
    "holdout_split",
    "label_units",
    "labeller",
    "load_probe_spec",
    "probe_atlas",
    "row_ranks",
    "soft_wpmi",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ProbeResult": "unitlens.probe.activations",
        "probe_atlas": "unitlens.probe.activations",
        "ClipDissect": "unitlens.probe.clip_dissect",
        "soft_wpmi": "unitlens.probe.clip_dissect",
        "Faithfulness": "unitlens.probe.faithfulness",
        "evaluate_labels": "unitlens.probe.faithfulness",
        "Invert": "unitlens.probe.invert",
        "beam_search": "unitlens.probe.invert",
        "LabelContext": "unitlens.probe.labellers",
        "Labeller": "unitlens.probe.labellers",
        "label_units": "unitlens.probe.labellers",
        "labeller": "unitlens.probe.labellers",
        "SemanticLensLabeller": "unitlens.probe.lens_labels",
        "auc_by_ranks": "unitlens.probe.ranking",
        "row_ranks": "unitlens.probe.ranking",
        "ProbeSpec": "unitlens.probe.spec",
        "load_probe_spec": "unitlens.probe.spec",
        "holdout_split": "unitlens.probe.split",
        "ProbeStore": "unitlens.probe.store",
    },
)
