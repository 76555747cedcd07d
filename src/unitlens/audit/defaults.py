"""Defaults of the audit steps (the CLI takes its option defaults from here)."""
AUDIT_MIN_RELEVANCE = 0.028  # units below this max relevance share are not judged (paper, supplementary F.1.1)
BATCH_SIZE = 32  # images per forward pass of the model tests
RELEVANCE_STAT = "max"  # a unit's relevance for the filter: its max share over the class's samples (the paper's)
ABLATE = "zero"  # pruning sets units to 0 (the paper's); "mean" uses each unit's mean activation
