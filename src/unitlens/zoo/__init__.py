"""Model zoo: load analysed models with their preprocessing, and list their units."""
from unitlens.zoo.factory import LoadedModel, load_model
from unitlens.zoo.units import LayerInfo, enumerate_units

__all__ = ["LayerInfo", "LoadedModel", "enumerate_units", "load_model"]
