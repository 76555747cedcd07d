"""Defaults of the audit steps (the CLI takes its option defaults from here)."""
AUDIT_MIN_RELEVANCE = 0.028  # units below this max relevance share are not judged (paper, supplementary F.1.1)
BATCH_SIZE = 32  # images per forward pass of the model tests
