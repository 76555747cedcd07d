"""Defaults of the basis steps (the CLI takes its option defaults from here)."""
KINDS = ("sae-topk", "sae-batchtopk", "sae-jumprelu", "sae-archetypal", "pca", "ica", "nmf", "random", "file")
SAE_KINDS = ("sae-topk", "sae-batchtopk", "sae-jumprelu", "sae-archetypal")
POSITIONS = ("spatial", "image")  # every spatial position / token is a sample, or one reduced vector per image
POSITIONS_DEFAULT = "spatial"
EXPANSION = 8  # SAE features = EXPANSION x the layer's channels unless --features is given
K = 32  # active features per sample of a TopK / BatchTopK SAE (at most the number of features)
STEPS = 1000  # SAE optimisation steps when --epochs is not given: epochs = ceil(STEPS / steps per epoch)
MAX_EPOCHS = 200  # ... at most
LEARNING_RATE = 3e-3  # Adam
SAE_BATCH_SIZE = 512  # samples per SAE optimisation step
JUMPRELU_PENALTY = 1e-3  # L1 weight of the JumpReLU SAE's loss (overcomplete's mse_l1)
AUX_PENALTY = 0.1  # weight of the TopK auxiliary loss that revives dead features (Gao et al. 2024)
BATCH_SIZE = 64  # images per forward pass
BUFFER_MB = 256  # activations held in memory at most; larger streams are read again each epoch
RESERVOIR = 20000  # samples kept for ICA when the activations do not fit the buffer, and for SAE initialisation
NONLINEARITIES = ("none", "relu", "topk", "threshold")  # of a user matrix (--kind file)
ENCODE_FLOATS = 1 << 24  # features encoded at once while recording (64 MiB of float32), at least one image
CHECKPOINT_EVERY = 2048  # images between two saved states of a basis record pass
DEAD_EPS = 0.0  # a feature is active on a sample when |f| > this
