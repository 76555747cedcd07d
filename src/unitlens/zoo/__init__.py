"""Model zoo: load analysed models with their preprocessing, and list their units."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.zoo.factory import LoadedModel, as_loaded_model, load_model
    from unitlens.zoo.units import LayerInfo, enumerate_units

__all__ = ["LayerInfo", "LoadedModel", "as_loaded_model", "enumerate_units", "load_model"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "LoadedModel": "unitlens.zoo.factory",
        "load_model": "unitlens.zoo.factory",
        "as_loaded_model": "unitlens.zoo.factory",
        "LayerInfo": "unitlens.zoo.units",
        "enumerate_units": "unitlens.zoo.units",
    },
)
