"""Defaults of studies (the CLI takes its option defaults from here)."""
STEPS = ("record", "mis", "lens", "featviz")  # the order steps of an entry run in
DEFAULT_STEPS = ("record", "mis")
JOBS = 1  # entries in parallel processes on one machine
GPUS_PER_TASK = 0.0  # GPUs a Ray task asks for
THREADS = 1  # torch threads of every step in every executor (results depend on it, never on where a step runs)
MEMORY_BUDGET_MB = 4096  # estimated weights + streaming state of the models that share one record pass
WORST_SHARE = 0.05  # "worst units": the lowest 5 % of an entry's per-unit MIS
SHARE_EMBEDDINGS = True  # entries on the same images share one embedding cache (see unitlens.study.embeddings)
DEPTH_BINS = 30  # equal-count bins of relative depth per layer type (the MIS paper, fig. 6A)
WIDTH_BINS = 5  # equal-count bins of relative width per layer type (fig. 6B)
