"""Defaults of the probe pass, the three labellers and the faithfulness evaluation (the CLI takes its option
defaults from here)."""
PROBE_NAME = "default"  # probe sets are stored per name under <atlas>/probe/<name>/
BATCH_SIZE = 32
MAX_ACTIVATIONS = 2**28  # units x probe images per pass: 1 GiB of float32 on disk and in memory, at most
METHODS = ("semanticlens", "clip-dissect", "invert")
BASELINE = "random"  # a seeded random concept per unit: the chance level of every faithfulness figure

# held-out faithfulness
HOLDOUT = 0.5  # share of each concept pattern's probe images kept out of labelling
SEED = 0
GOOD_AUC = 0.9

# CLIP-Dissect (Oikarinen & Weng 2023, soft-WPMI; the values of their reference implementation)
TOP_K = 100  # images ranked into a unit's soft top set B_k
P_START = 0.998  # p(x in B_k) of the most activating image ...
P_END = 0.97  # ... falling linearly to this at rank TOP_K (0 below)
SOFTMAX_SCALE = 10.0  # p(t | x) = softmax over concepts of SOFTMAX_SCALE * cos(image, concept)
LAMBDA = 1.0  # weight of the concept prior log p(t)
MIN_PROB = 1e-7  # keeps log() finite

# INVERT (Bykov et al. 2023/2024)
LENGTH = 3  # formulas of at most this many concepts
BEAM = 10  # formulas kept per unit and step
MIN_FRACTION = 0.0  # a formula's share of the labelling images must lie in [MIN_FRACTION, MAX_FRACTION]
MAX_FRACTION = 0.5
MIN_SUPPORT = 2  # ... and it must hold for at least this many labelling images
