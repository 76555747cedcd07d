"""Defaults of the audit steps (their options classes take them from here)."""
AUDIT_MIN_RELEVANCE = 0.028  # units below this max relevance share are not judged (paper, supplementary F.1.1)
BATCH_SIZE = 32  # images per forward pass of the model tests
RELEVANCE_STATS = ("max", "mean")  # a unit's relevance for the filter: its max or mean share over the samples
RELEVANCE_STAT = "max"  # the max share over the class's samples (the paper's)
EXEMPLARS = 5  # concept examples kept per audited unit (table and figure)
ABLATIONS = ("zero", "mean")  # what pruning sets units to: 0, or each unit's mean activation over an atlas
ABLATE = "zero"  # the paper's pruning
