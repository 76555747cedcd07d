"""Probe passes and labels you can trust: unit activations on a labelled probe set, the labellers behind one
interface (SemanticLens, CLIP-Dissect, INVERT, a random baseline), and the held-out faithfulness of their labels::

    record_probe("atlas/lite0-demo", "probe.csv", columns=["category"])       # unitlens probe
    label_units("atlas/lite0-demo", method="invert")                           # unitlens lens label --method invert
    res = evaluate_labels("atlas/lite0-demo")                                  # unitlens lens evaluate-labels
    res.summary; plot_label_faithfulness(res)

Labels go to the atlas's label store (``unitlens.atlas.labels.LabelStore``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.probe.activations import ProbeResult, record_probe
    from unitlens.probe.clip_dissect import ClipDissect, soft_wpmi
    from unitlens.probe.faithfulness import Faithfulness, evaluate_labels
    from unitlens.probe.figures import plot_label_faithfulness
    from unitlens.probe.invert import Invert, beam_search
    from unitlens.probe.labellers import LABELLERS, LabelContext, Labeller, labeller
    from unitlens.probe.labelling import UnitLabels, label_units
    from unitlens.probe.lens_labels import SemanticLensLabeller
    from unitlens.probe.options import EvaluationOptions, LabellerOptions, LabelOptions, ProbeOptions
    from unitlens.probe.ranking import auc_by_ranks, row_ranks
    from unitlens.probe.spec import ProbeSpec, load_probe_spec
    from unitlens.probe.split import holdout_split
    from unitlens.probe.store import ProbeStore

__all__ = [
    "LABELLERS",
    "ClipDissect",
    "EvaluationOptions",
    "Faithfulness",
    "Invert",
    "LabelContext",
    "LabelOptions",
    "Labeller",
    "LabellerOptions",
    "ProbeOptions",
    "ProbeResult",
    "ProbeSpec",
    "ProbeStore",
    "SemanticLensLabeller",
    "UnitLabels",
    "auc_by_ranks",
    "beam_search",
    "evaluate_labels",
    "holdout_split",
    "label_units",
    "labeller",
    "load_probe_spec",
    "plot_label_faithfulness",
    "record_probe",
    "row_ranks",
    "soft_wpmi",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ProbeResult": "unitlens.probe.activations",
        "record_probe": "unitlens.probe.activations",
        "ClipDissect": "unitlens.probe.clip_dissect",
        "soft_wpmi": "unitlens.probe.clip_dissect",
        "Faithfulness": "unitlens.probe.faithfulness",
        "evaluate_labels": "unitlens.probe.faithfulness",
        "plot_label_faithfulness": "unitlens.probe.figures",
        "Invert": "unitlens.probe.invert",
        "beam_search": "unitlens.probe.invert",
        "LABELLERS": "unitlens.probe.labellers",
        "LabelContext": "unitlens.probe.labellers",
        "Labeller": "unitlens.probe.labellers",
        "labeller": "unitlens.probe.labellers",
        "UnitLabels": "unitlens.probe.labelling",
        "label_units": "unitlens.probe.labelling",
        "SemanticLensLabeller": "unitlens.probe.lens_labels",
        "EvaluationOptions": "unitlens.probe.options",
        "LabelOptions": "unitlens.probe.options",
        "LabellerOptions": "unitlens.probe.options",
        "ProbeOptions": "unitlens.probe.options",
        "auc_by_ranks": "unitlens.probe.ranking",
        "row_ranks": "unitlens.probe.ranking",
        "ProbeSpec": "unitlens.probe.spec",
        "load_probe_spec": "unitlens.probe.spec",
        "holdout_split": "unitlens.probe.split",
        "ProbeStore": "unitlens.probe.store",
    },
)
