"""unitlens: measure and explain every unit of a vision model without humans."""
from unitlens.atlas import Atlas
from unitlens.data import ImageDataset, load_dataset
from unitlens.record import record
from unitlens.zoo import LayerInfo, enumerate_units, load_model

__version__ = "0.1.0"
__all__ = ["Atlas", "ImageDataset", "LayerInfo", "enumerate_units", "load_dataset", "load_model", "record"]
