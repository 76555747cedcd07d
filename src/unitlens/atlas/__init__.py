"""The on-disk atlas: manifest, unit table, exemplar arrays, samples; atomic writes and resumable state."""
from unitlens.atlas.atlas import Atlas, AtlasError, Exemplars

__all__ = ["Atlas", "AtlasError", "Exemplars"]
