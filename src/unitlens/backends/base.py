"""The one interface every embedding model implements, and the registry that builds them by name.

A backend turns images (and, where it has a text tower, strings) into L2-normalised vectors; every
similarity in unitlens is then a dot product of cached vectors. Names look like ``dreamsim``,
``openclip:ViT-B-32/openai``, ``hf:facebook/dinov2-base``, ``timm:resnet50``, ``offline``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from PIL import Image


class BackendUnavailable(RuntimeError):
    """A backend's weights or package cannot be had here; the message says how to get them."""


class Backend(ABC):
    """An embedding model with its own preprocessing. Outputs are float32, L2-normalised, on CPU."""

    name: str
    dim: int
    has_text: bool = False

    def __init__(self, device: str | torch.device | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

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


BackendFactory = Callable[..., Backend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(prefix: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a factory for names ``<prefix>`` or ``<prefix>:<spec>``; it is called as ``f(spec, device=...)``."""

    def deco(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[prefix] = factory
        return factory

    return deco


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def load_backend(name: str, device: str | torch.device | None = None, **kwargs) -> Backend:
    """Build the backend called ``name`` (``prefix`` or ``prefix:spec``)."""
    prefix, _, spec = name.partition(":")
    if prefix not in _REGISTRY:
        raise ValueError(f"unknown backend '{name}'; registered: {', '.join(available_backends())}")
    return _REGISTRY[prefix](spec, device=device, **kwargs)
