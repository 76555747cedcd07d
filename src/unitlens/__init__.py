"""unitlens: measure and explain every unit of a vision model without humans.

``import unitlens as ul`` gives the whole workflow; each name is imported on first use (``import unitlens``
loads no torch), and a name whose optional extra is missing says which extra to install::

    import unitlens as ul

    atlas = ul.record("efficientnet_lite0", "demo", "atlas/lite0", layers=["blocks.6.*"]).atlas
    scores = ul.score_mis(atlas).frame         # MIS of every unit
    atlas.unit("blocks.6.0.conv_pwl", 3)       # a unit's page in a notebook

The groups below are those of the API reference (docs/reference/api.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from unitlens.atlas.atlas import Atlas
    from unitlens.atlas.labels import LabelStore
    from unitlens.atlas.manifest import Manifest
    from unitlens.atlas.unit import Unit
    from unitlens.atlas.upgrade import upgrade_atlas
    from unitlens.atlas.verify import verify_atlas
    from unitlens.audit.alignment import AuditResult, audit_class
    from unitlens.audit.figures import plot_audit, plot_flagged_units
    from unitlens.audit.logit_auc import audit_test
    from unitlens.audit.options import AuditOptions, AuditTestOptions, PruneOptions
    from unitlens.audit.prune import prune_check
    from unitlens.basis.compare import compare_bases
    from unitlens.basis.figures import plot_basis_comparison
    from unitlens.basis.fit import fit_basis
    from unitlens.basis.options import BasisCompareOptions, BasisOptions, BasisRecordOptions
    from unitlens.basis.recording import record_bases
    from unitlens.data.datasets import ImageDataset, load_dataset
    from unitlens.errors import UnitlensError
    from unitlens.explorer.options import ReportOptions, ServeOptions
    from unitlens.explorer.server import serve
    from unitlens.explorer.static_site import write_report
    from unitlens.featviz.figures import plot_featviz
    from unitlens.featviz.options import FeatvizOptions
    from unitlens.featviz.render import visualize
    from unitlens.featviz.run import featviz_atlas
    from unitlens.featviz.scoring import score_featviz
    from unitlens.lens.embed import embed_units
    from unitlens.lens.figures import plot_lens
    from unitlens.lens.lens import Lens, LensUnit
    from unitlens.lens.options import CompareOptions, EmbedOptions, LensPlotOptions, MeasuresOptions, SearchOptions
    from unitlens.lens.unit_measures import clarity, polysemanticity, redundancy
    from unitlens.mis.options import CalibrationOptions, MISOptions
    from unitlens.mis.scoring import MISRun, load_scores, mis_from_margins, score_embeddings, score_mis
    from unitlens.mis.tasks import Tasks, build_tasks
    from unitlens.probe.activations import record_probe
    from unitlens.probe.faithfulness import evaluate_labels
    from unitlens.probe.labelling import label_units
    from unitlens.probe.options import EvaluationOptions, LabelOptions, ProbeOptions
    from unitlens.recording.folder import RecordResult
    from unitlens.recording.many import record_many
    from unitlens.recording.options import RecordOptions
    from unitlens.recording.run import record
    from unitlens.relevance.explain_class import class_relevance
    from unitlens.relevance.figures import plot_attribution_graph
    from unitlens.relevance.graph import GraphResult, attribution_graph
    from unitlens.relevance.options import GraphOptions, PredictedOptions, RelevanceOptions
    from unitlens.relevance.predicted import predicted_relevance
    from unitlens.relevance.store import load_relevance
    from unitlens.report.mis_plots import plot_mis
    from unitlens.study.figures import plot_study
    from unitlens.study.options import StudyPlanOptions, StudyRunOptions
    from unitlens.study.plan import plan_study
    from unitlens.study.runner import StudyRun, run_study
    from unitlens.study.study import Study
    from unitlens.zoo.factory import LoadedModel, as_loaded_model, load_model
    from unitlens.zoo.options import ModelOptions
    from unitlens.zoo.units import LayerInfo, enumerate_units

__all__ = [
    "Atlas",
    "AuditOptions",
    "AuditResult",
    "AuditTestOptions",
    "BasisCompareOptions",
    "BasisOptions",
    "BasisRecordOptions",
    "CalibrationOptions",
    "CompareOptions",
    "EmbedOptions",
    "EvaluationOptions",
    "FeatvizOptions",
    "GraphOptions",
    "GraphResult",
    "ImageDataset",
    "LabelOptions",
    "LabelStore",
    "LayerInfo",
    "Lens",
    "LensPlotOptions",
    "LensUnit",
    "LoadedModel",
    "MISOptions",
    "MISRun",
    "Manifest",
    "MeasuresOptions",
    "ModelOptions",
    "PredictedOptions",
    "ProbeOptions",
    "PruneOptions",
    "RecordOptions",
    "RecordResult",
    "RelevanceOptions",
    "ReportOptions",
    "SearchOptions",
    "ServeOptions",
    "Study",
    "StudyPlanOptions",
    "StudyRun",
    "StudyRunOptions",
    "Tasks",
    "Unit",
    "UnitlensError",
    "as_loaded_model",
    "attribution_graph",
    "audit_class",
    "audit_test",
    "build_tasks",
    "clarity",
    "class_relevance",
    "compare_bases",
    "embed_units",
    "enumerate_units",
    "evaluate_labels",
    "featviz_atlas",
    "fit_basis",
    "label_units",
    "load_dataset",
    "load_model",
    "load_relevance",
    "load_scores",
    "mis_from_margins",
    "plan_study",
    "plot_attribution_graph",
    "plot_audit",
    "plot_basis_comparison",
    "plot_featviz",
    "plot_flagged_units",
    "plot_lens",
    "plot_mis",
    "plot_study",
    "polysemanticity",
    "predicted_relevance",
    "prune_check",
    "record",
    "record_bases",
    "record_many",
    "record_probe",
    "redundancy",
    "run_study",
    "score_embeddings",
    "score_featviz",
    "score_mis",
    "serve",
    "upgrade_atlas",
    "verify_atlas",
    "visualize",
    "write_report",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        # Models and data
        "LoadedModel": "unitlens.zoo.factory",
        "as_loaded_model": "unitlens.zoo.factory",
        "load_model": "unitlens.zoo.factory",
        "ModelOptions": "unitlens.zoo.options",
        "LayerInfo": "unitlens.zoo.units",
        "enumerate_units": "unitlens.zoo.units",
        "ImageDataset": "unitlens.data.datasets",
        "load_dataset": "unitlens.data.datasets",
        # The record pass and the atlas
        "RecordOptions": "unitlens.recording.options",
        "RecordResult": "unitlens.recording.folder",
        "record": "unitlens.recording.run",
        "record_many": "unitlens.recording.many",
        "Atlas": "unitlens.atlas.atlas",
        "Unit": "unitlens.atlas.unit",
        "LabelStore": "unitlens.atlas.labels",
        "Manifest": "unitlens.atlas.manifest",
        "upgrade_atlas": "unitlens.atlas.upgrade",
        "verify_atlas": "unitlens.atlas.verify",
        # MIS
        "CalibrationOptions": "unitlens.mis.options",
        "MISOptions": "unitlens.mis.options",
        "MISRun": "unitlens.mis.scoring",
        "load_scores": "unitlens.mis.scoring",
        "mis_from_margins": "unitlens.mis.scoring",
        "score_embeddings": "unitlens.mis.scoring",
        "score_mis": "unitlens.mis.scoring",
        "Tasks": "unitlens.mis.tasks",
        "build_tasks": "unitlens.mis.tasks",
        "plot_mis": "unitlens.report.mis_plots",
        # SemanticLens
        "CompareOptions": "unitlens.lens.options",
        "EmbedOptions": "unitlens.lens.options",
        "LensPlotOptions": "unitlens.lens.options",
        "MeasuresOptions": "unitlens.lens.options",
        "SearchOptions": "unitlens.lens.options",
        "Lens": "unitlens.lens.lens",
        "LensUnit": "unitlens.lens.lens",
        "embed_units": "unitlens.lens.embed",
        "plot_lens": "unitlens.lens.figures",
        "clarity": "unitlens.lens.unit_measures",
        "polysemanticity": "unitlens.lens.unit_measures",
        "redundancy": "unitlens.lens.unit_measures",
        # Relevance and audits
        "GraphOptions": "unitlens.relevance.options",
        "PredictedOptions": "unitlens.relevance.options",
        "RelevanceOptions": "unitlens.relevance.options",
        "class_relevance": "unitlens.relevance.explain_class",
        "predicted_relevance": "unitlens.relevance.predicted",
        "GraphResult": "unitlens.relevance.graph",
        "attribution_graph": "unitlens.relevance.graph",
        "plot_attribution_graph": "unitlens.relevance.figures",
        "load_relevance": "unitlens.relevance.store",
        "AuditOptions": "unitlens.audit.options",
        "AuditTestOptions": "unitlens.audit.options",
        "PruneOptions": "unitlens.audit.options",
        "AuditResult": "unitlens.audit.alignment",
        "audit_class": "unitlens.audit.alignment",
        "audit_test": "unitlens.audit.logit_auc",
        "prune_check": "unitlens.audit.prune",
        "plot_audit": "unitlens.audit.figures",
        "plot_flagged_units": "unitlens.audit.figures",
        # Bases (SAE features, PCA, ...)
        "BasisCompareOptions": "unitlens.basis.options",
        "BasisOptions": "unitlens.basis.options",
        "BasisRecordOptions": "unitlens.basis.options",
        "fit_basis": "unitlens.basis.fit",
        "record_bases": "unitlens.basis.recording",
        "compare_bases": "unitlens.basis.compare",
        "plot_basis_comparison": "unitlens.basis.figures",
        # Labels
        "EvaluationOptions": "unitlens.probe.options",
        "LabelOptions": "unitlens.probe.options",
        "ProbeOptions": "unitlens.probe.options",
        "record_probe": "unitlens.probe.activations",
        "label_units": "unitlens.probe.labelling",
        "evaluate_labels": "unitlens.probe.faithfulness",
        # Feature visualisations
        "FeatvizOptions": "unitlens.featviz.options",
        "visualize": "unitlens.featviz.render",
        "featviz_atlas": "unitlens.featviz.run",
        "score_featviz": "unitlens.featviz.scoring",
        "plot_featviz": "unitlens.featviz.figures",
        # Studies and the explorer
        "Study": "unitlens.study.study",
        "StudyPlanOptions": "unitlens.study.options",
        "StudyRunOptions": "unitlens.study.options",
        "StudyRun": "unitlens.study.runner",
        "run_study": "unitlens.study.runner",
        "plan_study": "unitlens.study.plan",
        "plot_study": "unitlens.study.figures",
        "ReportOptions": "unitlens.explorer.options",
        "ServeOptions": "unitlens.explorer.options",
        "serve": "unitlens.explorer.server",
        "write_report": "unitlens.explorer.static_site",
        # Errors
        "UnitlensError": "unitlens.errors",
    },
)
