"""unitlens: measure and explain every unit of a vision model without humans.

The main entries are re-exported here and imported on first use (``import unitlens`` loads no torch)::

    from unitlens import Atlas, enumerate_units, load_dataset, load_model, record
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from unitlens.atlas import Atlas
    from unitlens.data import ImageDataset, load_dataset
    from unitlens.errors import UnitlensError
    from unitlens.record import record
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
        "record": "unitlens.record",
    },
)

# ``unitlens.record`` names both a subpackage and the function ``record``. Importing the subpackage (light: its
# names are lazy too) binds it as an attribute here; dropping that attribute now leaves the name to
# ``__getattr__``, which resolves it to the function, as ``from unitlens import record`` promises.
importlib.import_module("unitlens.record")
del globals()["record"]
