"""The one interface every embedding model implements, and the registry that builds them by name.

A backend turns images (and, where it has a text tower, strings) into L2-normalised vectors; every
similarity in unitlens is then a dot product of cached vectors. Names look like ``dreamsim``,
``openclip:ViT-B-32/openai``, ``hf:facebook/dinov2-base``, ``timm:resnet50``, ``offline``.

Perceptual *distances* that are defined only on image pairs (LPIPS) are ``PairwiseBackend``\\ s: they
have ``embeds = False`` and answer ``similarity(a, b)`` only; they cannot be cached as vectors.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from unitlens.registry import Registry
from unitlens.runtime import pick_device


class Backend(ABC):
    """An embedding model with its own preprocessing. Outputs are float32, L2-normalised, on CPU.

    ``name`` identifies the weights too (random-weight builds end in ``+random``), so it keys caches. Where one
    name can mean several weights (a projection rebuilt by a training script), ``weights_id`` is their digest:
    caches and lens stores record it, drop vectors of other weights and refuse to mix them.
    """

    name: str
    dim: int
    weights_id: str = ""
    has_text: bool = False
    embeds: bool = True  # False for pairwise-only perceptual distances

    def __init__(self, device: str | torch.device | None = None):
        self.device = pick_device(device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device})"

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> the (3, H, W) tensor ``encode_images`` takes."""

    @abstractmethod
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, dim) normalised embeddings."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Strings -> (B, dim) normalised embeddings in the image space (backends with a text tower)."""
        raise NotImplementedError(
            f"backend '{self.name}' has no text encoder; use image probes, or a vision-language backend "
            "such as openclip:MobileCLIP-S2/datacompdr or hf:openai/clip-vit-base-patch32"
        )

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(A, 3, H, W), (B, 3, H, W) preprocessed images -> (A, B) similarities (cosine for embedding backends)."""
        return self.encode_images(a) @ self.encode_images(b).T

    @staticmethod
    def _finish(features: torch.Tensor) -> torch.Tensor:
        """Model output -> float32, L2-normalised along the last axis, on CPU."""
        return F.normalize(features.detach().float(), dim=-1).cpu()


class PairwiseBackend(Backend):
    """A perceptual distance defined on image pairs only; ``similarity`` is minus the distance.

    It has no embedding: ``encode_images`` raises, and the embedding cache refuses it. Subclasses split the
    distance into ``features`` (one network pass per image) and ``compare`` (every pair of two feature sets),
    so that an (A, B) matrix costs A + B forwards, not A·B; the distance must be symmetric. ``settings`` names
    what besides ``name`` changes the values (the input size), so stored matrices of other settings are not reused.
    """

    embeds = False
    dim = 0
    chunk = 32  # rows of ``a`` compared at once in ``similarity``

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"backend '{self.name}' is a distance between image pairs, not an embedding; call "
            "backend.similarity(a, b) on preprocessed batches, or use an embedding backend (dreamsim, openclip:..., "
            "hf:..., timm:..., offline) for cached dot-product similarities"
        )

    @property
    def settings(self) -> dict:
        """What besides the name and weights changes the similarities (kept with stored matrices)."""
        return {}

    @abstractmethod
    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) preprocessed images -> the tensors ``compare`` takes, each with the B images first (so
        ``[f[i:j] for f in feats]`` are the features of images i..j-1)."""

    @abstractmethod
    def compare(self, fa: list[torch.Tensor], fb: list[torch.Tensor]) -> torch.Tensor:
        """Features of A and of B images -> the (A, B) similarities (minus the distance), float32 on CPU."""

    @torch.inference_mode()
    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(A, 3, H, W), (B, 3, H, W) preprocessed images -> (A, B) similarities (minus the distance); memory grows
        with len(b), whose features are kept while ``a`` goes through in chunks."""
        fb = self.features(b)
        rows = [self.compare(self.features(a[s:s + self.chunk]), fb) for s in range(0, len(a), self.chunk)]
        return torch.cat(rows) if rows else torch.zeros(0, len(b))


BackendFactory = Callable[..., Backend]
# prefix -> factory called as f(spec, device=..., **kwargs); every built-in factory takes pretrained=False (the
# real architecture with seeded random weights) and raises BackendUnavailable when its weights are missing
BACKENDS: Registry[BackendFactory] = Registry(
    "embedding backend", hint="a name is a prefix or prefix:spec, e.g. offline, openclip:ViT-B-32/openai, hf:<id>")


def as_backend(backend: "Backend | str", device: str | torch.device | None = None) -> Backend:
    """A Backend from an instance (returned as is) or a registered name."""
    return load_backend(backend, device=device) if isinstance(backend, str) else backend


def load_backend(name: str, device: str | torch.device | None = None, **kwargs) -> Backend:
    """Build the backend called ``name`` (``prefix`` or ``prefix:spec``); ``kwargs`` go to its factory.

    A name ending in ``+random`` (what random-weight builds are called) builds that architecture with
    random weights, so every backend's ``name`` loads it again.
    """
    if name.endswith("+random"):
        name, kwargs = name[: -len("+random")], {**kwargs, "pretrained": False}
    prefix, _, spec = name.partition(":")
    return BACKENDS.get(prefix)(spec, device=device, **kwargs)
