"""CRP relevance of units (zennit / zennit-crp): per-class relevance stored in the atlas, relevance crops of
concept examples, attribution graphs between labelled unit groups.

::

    class_relevance(atlas, "lighthouse")            # -> table per unit, stored in <atlas>/relevance/
    load_relevance(atlas, "lighthouse")             # read it back (RelevanceNotComputed when missing)
    predicted_relevance(atlas)                      # every sample explains its own top-1 class
    relevant_classes(atlas, "blocks.6.0.conv_pwl")  # the top classes of every unit
    graph = attribution_graph(atlas, "lighthouse", "blocks.5.0.conv_pwl,blocks.6.0.conv_pwl")
    plot_attribution_graph(graph)                   # a matplotlib Figure
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.relevance.composite import composite_for
    from unitlens.relevance.explain_class import class_relevance
    from unitlens.relevance.figures import plot_attribution_graph
    from unitlens.relevance.graph import GraphResult, attribution_graph
    from unitlens.relevance.options import GraphOptions, PredictedOptions, RelevanceOptions
    from unitlens.relevance.predicted import predicted_relevance
    from unitlens.relevance.store import (
        load_relevance,
        relevant_classes,
        stored_classes,
    )

__all__ = [
    "GraphOptions",
    "GraphResult",
    "PredictedOptions",
    "RelevanceOptions",
    "attribution_graph",
    "class_relevance",
    "composite_for",
    "load_relevance",
    "plot_attribution_graph",
    "predicted_relevance",
    "relevant_classes",
    "stored_classes",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "class_relevance": "unitlens.relevance.explain_class",
        "composite_for": "unitlens.relevance.composite",
        "plot_attribution_graph": "unitlens.relevance.figures",
        "GraphResult": "unitlens.relevance.graph",
        "attribution_graph": "unitlens.relevance.graph",
        "GraphOptions": "unitlens.relevance.options",
        "PredictedOptions": "unitlens.relevance.options",
        "RelevanceOptions": "unitlens.relevance.options",
        "predicted_relevance": "unitlens.relevance.predicted",
        "load_relevance": "unitlens.relevance.store",
        "relevant_classes": "unitlens.relevance.store",
        "stored_classes": "unitlens.relevance.store",
    },
)
