"""The on-disk atlas: manifest, unit table, exemplar arrays, samples, derived results; atomic writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.atlas.atlas import Atlas, Exemplars
    from unitlens.atlas.labels import LabelStore
    from unitlens.atlas.manifest import Manifest
    from unitlens.atlas.upgrade import upgrade_atlas

__all__ = ["Atlas", "Exemplars", "LabelStore", "Manifest", "upgrade_atlas"]
__getattr__, __dir__ = lazy_exports(__name__, {"Atlas": "unitlens.atlas.atlas", "Exemplars": "unitlens.atlas.atlas",
                                               "LabelStore": "unitlens.atlas.labels",
                                               "Manifest": "unitlens.atlas.manifest",
                                               "upgrade_atlas": "unitlens.atlas.upgrade"})
