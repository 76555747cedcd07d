"""``VerifyOptions``: the options of checking an atlas (``verify_atlas``, ``unitlens atlas verify``), with their
defaults and help."""
from __future__ import annotations

from dataclasses import dataclass

from unitlens.options import Options, option


@dataclass(frozen=True)
class VerifyOptions(Options):
    """How far ``verify_atlas`` looks beyond the atlas's own files."""

    images: bool = option(True, "Also check that every image is still there and, where the atlas holds content "
                                "hashes, that files with new times still have the recorded bytes.")
