"""CRP relevance of units (zennit / zennit-crp): per-class relevance stored in the atlas, relevance crops of
concept examples, attribution graphs between labelled unit groups.

::

    compute_relevance(atlas, "lighthouse")          # -> table per unit, stored in <atlas>/relevance/
    load_relevance(atlas, "lighthouse")             # read it back (RelevanceError when missing)
    compute_predicted_relevance(atlas)              # every sample explains its own top-1 class
    relevant_classes(atlas, "blocks.6.0.conv_pwl")  # the top classes of every unit
"""
from __future__ import annotations

from unitlens.relevance.class_relevance import compute_relevance
from unitlens.relevance.composite import composite_for
from unitlens.relevance.errors import RelevanceError, RelevanceUnavailable
from unitlens.relevance.predicted import compute_predicted_relevance
from unitlens.relevance.store import load_relevance, relevant_classes, stored_classes

__all__ = ["RelevanceError", "RelevanceUnavailable", "composite_for", "compute_predicted_relevance",
           "compute_relevance", "load_relevance", "relevant_classes", "stored_classes"]
