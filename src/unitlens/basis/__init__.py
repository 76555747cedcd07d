"""Units beyond channels: bases (SAEs, PCA, ICA, NMF, random directions, user matrices) fitted on a layer's
activations, recorded as derived layers ``<layer>::<name>`` of the same atlas, and compared with the channels.

    fit_basis(atlas, "blocks.6.0.conv_pwl", "sae-x8", kind="sae-topk", expansion=8, k=32)
    record_bases(atlas, ["sae-x8"])            # -> layer blocks.6.0.conv_pwl::sae-x8, like any recorded layer
    res = compare_bases(atlas, "blocks.6.0.conv_pwl")
    res.table; plot_basis_comparison(res)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.basis.activations import LayerStream, Samples, TensorStream
    from unitlens.basis.compare import BasisComparison, compare_bases
    from unitlens.basis.encoder import Encoder
    from unitlens.basis.figures import plot_basis_comparison
    from unitlens.basis.fit import FitResult, fit_basis, read_samples
    from unitlens.basis.kinds import Fitted, fit_encoder, load_matrix, random_directions
    from unitlens.basis.metrics import fit_metrics
    from unitlens.basis.options import BasisCompareOptions, BasisOptions, BasisRecordOptions
    from unitlens.basis.recording import BasisRecordResult, basis_features, record_bases
    from unitlens.basis.store import Basis, bases_table, derived_layer, list_bases, load_basis

__all__ = [
    "Basis",
    "BasisCompareOptions",
    "BasisComparison",
    "BasisOptions",
    "BasisRecordOptions",
    "BasisRecordResult",
    "Encoder",
    "FitResult",
    "Fitted",
    "LayerStream",
    "Samples",
    "TensorStream",
    "bases_table",
    "basis_features",
    "compare_bases",
    "derived_layer",
    "fit_basis",
    "fit_encoder",
    "fit_metrics",
    "list_bases",
    "load_basis",
    "load_matrix",
    "plot_basis_comparison",
    "random_directions",
    "read_samples",
    "record_bases",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "LayerStream": "unitlens.basis.activations",
        "Samples": "unitlens.basis.activations",
        "TensorStream": "unitlens.basis.activations",
        "BasisComparison": "unitlens.basis.compare",
        "compare_bases": "unitlens.basis.compare",
        "Encoder": "unitlens.basis.encoder",
        "plot_basis_comparison": "unitlens.basis.figures",
        "FitResult": "unitlens.basis.fit",
        "fit_basis": "unitlens.basis.fit",
        "read_samples": "unitlens.basis.fit",
        "Fitted": "unitlens.basis.kinds",
        "fit_encoder": "unitlens.basis.kinds",
        "load_matrix": "unitlens.basis.kinds",
        "random_directions": "unitlens.basis.kinds",
        "fit_metrics": "unitlens.basis.metrics",
        "BasisOptions": "unitlens.basis.options",
        "BasisRecordOptions": "unitlens.basis.options",
        "BasisCompareOptions": "unitlens.basis.options",
        "BasisRecordResult": "unitlens.basis.recording",
        "basis_features": "unitlens.basis.recording",
        "record_bases": "unitlens.basis.recording",
        "Basis": "unitlens.basis.store",
        "bases_table": "unitlens.basis.store",
        "derived_layer": "unitlens.basis.store",
        "list_bases": "unitlens.basis.store",
        "load_basis": "unitlens.basis.store",
    },
)
