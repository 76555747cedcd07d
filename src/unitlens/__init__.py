"""unitlens: measure and explain every unit of a vision model without humans.

The main entries are re-exported here and imported on first use (``import unitlens`` loads no torch)::

    from unitlens import Atlas, enumerate_units, load_dataset, load_model, record
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from unitlens.atlas import Atlas
    from unitlens.data import ImageDataset, load_dataset
    from unitlens.errors import UnitlensError
    from unitlens.recording import record
    from unitlens.zoo import LayerInfo, enumerate_units, load_model

__all__ = [
    "Atlas",
    "ImageDataset",
    "LayerInfo",
    "UnitlensError",
    "enumerate_units",
    "load_dataset",
    "load_model",
    "record",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Atlas": "unitlens.atlas",
        "ImageDataset": "unitlens.data",
        "LayerInfo": "unitlens.zoo",
        "UnitlensError": "unitlens.errors",
        "enumerate_units": "unitlens.zoo",
        "load_dataset": "unitlens.data",
        "load_model": "unitlens.zoo",
        "record": "unitlens.recording",
    },
)

