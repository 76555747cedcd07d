"""Datasets of images with stable integer sample ids: folders, file lists and the bundled demo set."""
from unitlens.data.datasets import DEMO_ROOT, ImageDataset, load_dataset
from unitlens.data.images import open_rgb

__all__ = ["DEMO_ROOT", "ImageDataset", "load_dataset", "open_rgb"]
