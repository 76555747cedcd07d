"""Defaults of the relevance steps (their options classes take them from here)."""
GRAPH_MIN_RELEVANCE = 0.01  # units whose highest relevance share is below this stay out of an attribution graph
BATCH_SIZE = 16  # images per CRP pass
TOP_N = 10  # samples kept per unit (highest relevance share)
SAMPLE_RULES = ("top5", "top1", "all")  # which samples explain a class (see class_relevance)
SAMPLE_RULE = "top5"  # the class is among their top-5 predictions
TOP_CLASSES = 5  # classes kept per unit by the predicted-class run
