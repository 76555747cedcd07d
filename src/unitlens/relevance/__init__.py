"""CRP relevance of units (zennit / zennit-crp): per-class relevance stored in the atlas, relevance crops of
concept examples, attribution graphs between labelled unit groups.

::

    compute_relevance(atlas, "lighthouse")          # -> table per unit, stored in <atlas>/relevance/
    load_relevance(atlas, "lighthouse")             # read it back (RelevanceError when missing)
    compute_predicted_relevance(atlas)              # every sample explains its own top-1 class
    relevant_classes(atlas, "blocks.6.0.conv_pwl")  # the top classes of every unit
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.relevance.class_relevance import compute_relevance
    from unitlens.relevance.composite import composite_for
    from unitlens.relevance.defaults import GRAPH_MIN_RELEVANCE
    from unitlens.relevance.graph import GraphResult, attribution_graph
    from unitlens.relevance.predicted import compute_predicted_relevance
    from unitlens.relevance.store import (
        load_relevance,
        relevant_classes,
        stored_classes,
    )

__all__ = [
    "GRAPH_MIN_RELEVANCE",
    "GraphResult",
    "attribution_graph",
    "composite_for",
    "compute_predicted_relevance",
    "compute_relevance",
    "load_relevance",
    "relevant_classes",
    "stored_classes",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "compute_relevance": "unitlens.relevance.class_relevance",
        "composite_for": "unitlens.relevance.composite",
        "GRAPH_MIN_RELEVANCE": "unitlens.relevance.defaults",
        "GraphResult": "unitlens.relevance.graph",
        "attribution_graph": "unitlens.relevance.graph",
        "compute_predicted_relevance": "unitlens.relevance.predicted",
        "load_relevance": "unitlens.relevance.store",
        "relevant_classes": "unitlens.relevance.store",
        "stored_classes": "unitlens.relevance.store",
    },
)
