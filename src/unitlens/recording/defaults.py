"""Defaults of the record pass (the CLI takes its option defaults from here)."""
K = 200  # exemplars per unit and direction: MIS needs N·(K+1) = 20·10
BATCH_SIZE = 64
SPATIAL = ("mean", "max")  # reductions of (B, C, H, W) maps over space
TOKENS = ("mean", "cls", "max")  # reductions of (B, T, C) token outputs
SPATIAL_DEFAULT = "mean"
TOKENS_DEFAULT = "mean"
CHECKPOINT_EVERY = 2048  # images between two saved states of a run
MERGE_EVERY = 512  # samples buffered before a top-k merge
CONSTANT_EPS = 1e-8  # a unit is constant when max - min < this over the dataset
TIE_SEED = 0  # seeds the permutation that orders samples of equal activation
MICRO_BATCH_CPU = 8  # images per forward on a CPU: layer outputs stay in cache (same results, ~1.5-2x faster)
REPEATED = ("split", "skip")  # a module run several times per forward: one layer per call, or left out
REPEATED_SPLIT = "split"
