"""Model hubs: offline mode, whether the hub can be reached at all, and where downloaded weights are cached.

Every loader of pretrained weights (the analysed models' ``timm:``/``torchvision:`` sources here, the embedding
backends above) asks these, so a machine without network fails at once with a clear message instead of
retrying each file for most of a minute. Cache locations and offline mode are read from the environment at
call time (not at import time, as ``huggingface_hub`` does), so ``HF_HOME=/empty HF_HUB_OFFLINE=1`` set by a
caller or a test is honoured.
"""
from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

OFFLINE_ENV = ("UNITLENS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
CONNECT_TIMEOUT_S = 3.0


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def offline() -> bool:
    """True when downloads are switched off (``UNITLENS_OFFLINE``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    return any(_true(os.environ.get(var)) for var in OFFLINE_ENV)


def hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"


@functools.lru_cache(maxsize=None)
def _connects(host: str) -> bool:
    """Whether ``host`` resolves and accepts a TCP connection on port 443 within a few seconds (asked once)."""
    try:
        with socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """Whether the Hugging Face hub can be reached: not offline mode, and its host resolves and answers (behind a
    proxy, the proxy decides: assumed reachable)."""
    if offline():
        return False
    if any(os.environ.get(var) for var in PROXY_ENV):
        return True
    return _connects(hub_host())


def hub_offline() -> bool:
    """Offline mode, or a machine that cannot reach the hub (then ``huggingface_hub`` would retry every file for
    about a minute before giving up; asking the local cache only is the same answer, at once)."""
    return not hub_reachable()


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
