"""The options of the basis steps: ``BasisOptions`` (``fit_basis``, ``unitlens basis fit``), ``BasisRecordOptions``
(``record_bases``, ``unitlens basis record``) and ``BasisCompareOptions`` (``compare_bases``, ``unitlens basis
compare``)."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.basis.defaults import (
    BATCH_SIZE,
    BUFFER_MB,
    CHECKPOINT_EVERY,
    EXPANSION,
    KINDS,
    LEARNING_RATE,
    MAX_EPOCHS,
    NONLINEARITIES,
    POSITIONS,
    POSITIONS_DEFAULT,
    RESERVOIR,
    SAE_BATCH_SIZE,
    SAE_KINDS,
    STEPS,
    K,
)
from unitlens.errors import BadInput
from unitlens.options import Options, option
from unitlens.zoo.options import channels_last_option, device_option


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be above 0"


@dataclass(frozen=True)
class BasisOptions(Options):
    """What basis to fit (the kind and its settings) and how the layer's activations are read (``batch_size``,
    ``buffer_mb``, ``device`` and ``channels_last`` change no feature beyond float rounding)."""

    kind: str = option("sae-topk", "The kind of basis: a sparse autoencoder (sae-*), pca, ica, nmf, random "
                                   "orthogonal directions, or a matrix from a file.", choices=KINDS)
    positions: str = option(POSITIONS_DEFAULT, "spatial (every position / token is a sample) or image (the record "
                                               "pass's per-image vector).", choices=POSITIONS)
    features: int | None = option(None, "Number of features (default: expansion x channels for SAEs, the layer's "
                                        "width otherwise).", min=1)
    expansion: float = option(EXPANSION, "SAE features per channel when --features is not given.", check=_positive)
    k: int = option(K, "Active features per sample (TopK / BatchTopK SAEs, --nonlinearity topk).", min=1)
    epochs: int | None = option(None, f"SAE training epochs (default: about {STEPS:,} steps, at most {MAX_EPOCHS} "
                                      "epochs).", min=1)
    lr: float = option(LEARNING_RATE, "SAE learning rate (Adam).", check=_positive)
    sae_batch_size: int = option(SAE_BATCH_SIZE, "Samples per SAE optimisation step.", min=1)
    seed: int = option(0, "Seed of the fit (initialisation, shuffling, random directions).")
    matrix: str | None = option(None, "--kind file: .safetensors/.pt/.npy with 'weight' (features, channels) and "
                                      "optional bias, center, ...", metavar="FILE", convert=str)
    nonlinearity: str = option("none", "--kind file: the activation of the matrix's features.",
                               choices=NONLINEARITIES)
    batch_size: int = option(BATCH_SIZE, "Images per forward pass.", min=1)
    buffer_mb: float = option(BUFFER_MB, "Activations held in memory at most (MiB); larger streams are read again "
                                         "each pass.", check=_positive)
    reservoir: int = option(RESERVOIR, "Samples kept for ICA when the activations do not fit the buffer, and for "
                                       "SAE initialisation.", min=1)
    device: str | None = device_option()
    channels_last: bool = channels_last_option()
    force: bool = option(False, "Replace a basis of the same name (its recorded features and every result derived "
                                "from them go with it).")

    def validate(self) -> None:
        """Refuse ``matrix`` without kind ``file`` and kind ``file`` without ``matrix``."""
        if self.kind == "file" and not self.matrix:
            raise BadInput("kind file (--kind file) needs matrix (--matrix FILE: .safetensors, .pt or .npy)")
        if self.kind != "file" and self.matrix:
            raise BadInput(f"matrix (--matrix) is for kind file (--kind file), not {self.kind}")

    def features_for(self, channels: int) -> int:
        """The number of features for a layer of ``channels`` channels."""
        if self.features is not None:
            return self.features
        if self.kind in SAE_KINDS:
            return max(1, round(self.expansion * channels))
        return channels


@dataclass(frozen=True)
class BasisRecordOptions(Options):
    """How the basis record pass runs (none of these changes the recorded features beyond float rounding, but
    ``force``)."""

    batch_size: int = option(BATCH_SIZE, "Images per forward pass.", min=1)
    device: str | None = device_option()
    channels_last: bool = channels_last_option()
    checkpoint_every: int = option(CHECKPOINT_EVERY, "Images between two saved states of the pass (resume points).",
                                   min=1)
    force: bool = option(False, "Record a basis again that is recorded already (the results derived from its old "
                                "features go with them).")


@dataclass(frozen=True)
class BasisCompareOptions(Options):
    """Which stored results ``compare_bases`` reads."""

    backend: str | None = option(None, "MIS backend of the scores (default: offline, or the only one).")
    lens_backend: str | None = option(None, "Lens backend of clarity, polysemanticity and redundancy (default: the "
                                            "lens default, or the only one).")
    bases: tuple[str, ...] | None = option(None, "Basis names to show (comma-separated on the command line; "
                                                 "default: every recorded basis of the layer).", metavar="NAMES")
    labels: str | None = option(None, "Labelling method whose labelled share is compared (default: semanticlens "
                                      "labels of the lens backend, else the stored labels that cover most of the "
                                      "unit sets).", metavar="METHOD")
