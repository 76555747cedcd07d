"""``check_timm_name(name)``: a timm model name, with or without its pretrained tag (``resnet50.a1_in1k``), checked
against timm's registry before anything is built; a name timm does not know is an error that names the nearest
known ones.

The tag (after the first ``.``) selects the pretrained weights and their data configuration (input size,
interpolation, crop, mean/std, classes); without one timm takes the architecture's default tag.
"""
from __future__ import annotations

import difflib
import functools

from unitlens.errors import BadInput

SHOWN = 5  # nearest names an error lists


def nearest(name: str, known: list[str], n: int = SHOWN) -> list[str]:
    """The names of ``known`` closest to ``name`` (difflib's similarity, best first)."""
    return difflib.get_close_matches(name, list(dict.fromkeys(known)), n=n, cutoff=0.6)


@functools.lru_cache(maxsize=1)
def _pretrained_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models(pretrained=True))


def is_timm_architecture(arch: str) -> bool:
    """Whether timm has an architecture of this (untagged) name."""
    import timm

    return timm.is_model(arch) and "." not in arch


def check_timm_name(name: str) -> str:
    """``name`` when timm knows its architecture and, if it has one, its tag; else an error with the nearest
    names (pretrained tags of the architecture for an unknown tag)."""
    import timm

    arch, dot, tag = name.partition(".")
    if not arch or not is_timm_architecture(arch):
        close = nearest(name, timm.list_models(pretrained=True) + timm.list_models())
        hint = f"; nearest: {', '.join(close)}" if close else ""
        raise BadInput(f"timm has no architecture '{arch}'{hint} (see timm.list_models())")
    if dot and name not in _pretrained_names():
        tagged = timm.list_pretrained(f"{arch}.*")
        if not tagged:
            raise BadInput(f"timm has no pretrained tag '{tag}' for {arch}: it has no pretrained tags (give the name "
                           "without a tag)")
        close = nearest(name, tagged) or tagged[:SHOWN]
        more = f" ({len(tagged)} in all: timm.list_pretrained('{arch}.*'))" if len(tagged) > len(close) else ""
        raise BadInput(f"timm has no pretrained tag '{tag}' for {arch}; nearest: {', '.join(close)}{more}")
    return name
