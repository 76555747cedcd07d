"""Shared fixtures: tiny image folders and a hand-built model with exactly known, integer-valued units."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from unitlens.zoo.factory import LoadedModel


def write_images(root: Path, arrays: list[np.ndarray], classes: list[str] | None = None) -> list[Path]:
    """Save uint8 HxWx3 arrays as PNGs under root/<class>/img_<i>.png (sorted order = list order)."""
    paths = []
    for i, arr in enumerate(arrays):
        folder = root / (classes[i] if classes else "all")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:04d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def to_int_tensor(img: Image.Image) -> torch.Tensor:
    """PIL -> float tensor of the raw 0..255 integers (keeps every activation exactly representable)."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)


class ExactNet(nn.Module):
    """Conv units with integer weights on 8x8 inputs: spatial means are exact dyadic rationals.

    conv units: 0 = red, 1 = -red, 2 = constant 0, 3 = green - blue, 4 = relu(red - green).
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1, bias=False)
        self.conv = nn.Conv2d(3, 5, 1, bias=False)
        self.act = nn.ReLU()
        self.head = nn.Linear(5, 2, bias=False)
        with torch.no_grad():
            self.stem.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            w = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 0, 0], [0, 1, -1], [1, -1, 0]], dtype=torch.float32)
            self.conv.weight.copy_(w.view(5, 3, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 1, 0]]))

    def forward(self, x):
        h = self.conv(self.stem(x))
        h[:, 4] = self.act(h[:, 4])
        return self.head(h.mean((2, 3)))


@pytest.fixture
def exact_model() -> LoadedModel:
    return LoadedModel(name="exactnet", model=ExactNet().eval(), transform=to_int_tensor, weights="hand-built",
                       input_size=(3, 8, 8))


@pytest.fixture
def random_images(tmp_path) -> Path:
    """60 random 8x8 images in 3 classes, with deliberate exact duplicates to exercise tie-breaking."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(60)]
    for dup, src in [(10, 3), (20, 3), (41, 7), (59, 7)]:
        arrays[dup] = arrays[src].copy()
    root = tmp_path / "images"
    write_images(root, arrays, [f"c{i % 3}" for i in range(60)])
    return root
