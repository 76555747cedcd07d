"""Datasets of images with stable integer sample ids: folders, file lists and the bundled demo set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unitlens.runtime import lazy_exports

if TYPE_CHECKING:
    from unitlens.data.datasets import DEMO_ROOT, ImageDataset, load_dataset
    from unitlens.data.images import open_rgb

__all__ = ["DEMO_ROOT", "ImageDataset", "load_dataset", "open_rgb"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DEMO_ROOT": "unitlens.data.datasets",
        "ImageDataset": "unitlens.data.datasets",
        "load_dataset": "unitlens.data.datasets",
        "open_rgb": "unitlens.data.images",
    },
)
