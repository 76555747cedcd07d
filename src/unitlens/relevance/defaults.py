"""Defaults of the relevance steps (the CLI takes its option defaults from here)."""
GRAPH_MIN_RELEVANCE = 0.01  # units whose highest relevance share is below this stay out of an attribution graph
BATCH_SIZE = 16  # images per CRP pass
TOP_N = 10  # samples kept per unit (highest relevance share)
SAMPLE_RULE = "top5"  # which samples explain a class: the class is among their top-5 predictions
