"""Shared fixtures: tiny image folders and a hand-built model with exactly known, integer-valued units."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from unitlens.backends.base import Backend
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


# ---------------------------------------------------------------------------------------------- probe sets and labels
COLOURS = {"red": (225, 30, 30), "green": (30, 225, 40), "blue": (30, 40, 225), "grey": (160, 160, 160)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def stripe_image(colours: tuple[str, ...], size: tuple[int, int], rng) -> np.ndarray:
    """An HxWx3 uint8 image of vertical stripes, one per colour (grey when none), with noise sigma 6."""
    w, h = size
    names = colours or ("grey",)
    arr = np.zeros((h, w, 3))
    bounds = np.linspace(0, w, len(names) + 1).round().astype(int)
    for name, a, b in zip(names, bounds[:-1], bounds[1:]):
        arr[:, a:b] = COLOURS[name]
    return np.clip(arr + rng.normal(0, 6, arr.shape), 0, 255).astype(np.uint8)


def colour_probe_csv(root: Path, combos, per: int, seed: int, sizes=((32, 32),)) -> Path:
    """``per`` images of every colour combination under root/images and root/probe.csv with 0/1 columns red, green,
    blue (sizes cycle through ``sizes``)."""
    rng = np.random.default_rng(seed)
    lines = ["path,red,green,blue"]
    for c, combo in enumerate(combos):
        for i in range(per):
            rel = f"images/{'_'.join(combo) or 'none'}_{i}.png"
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(stripe_image(combo, sizes[(c + i) % len(sizes)], rng)).save(root / rel)
            lines.append(",".join([rel] + ["1" if k in combo else "0" for k in ("red", "green", "blue")]))
    (root / "probe.csv").write_text("\n".join(lines) + "\n")
    return root / "probe.csv"


class PresenceNet(nn.Module):
    """Colour presence units whose activations are exact indicators of the image's colours.

    ``detect`` (B, 3, H, W): per-pixel detectors relu(1 − ‖x − c‖ / 0.35) of red, green, blue; ``presence`` (B, 5):
    per image m_c · [m_c > 0.5] with m_c the detector's maximum (so 0 exactly where the colour is absent), then
    unit 3 = m_red · [green absent] ("red AND NOT green") and unit 4 = 0 (constant). With ``normalized`` the input
    is ImageNet-normalised (a saved module gets that transform) and is undone first.
    """

    def __init__(self, normalized: bool = False):
        super().__init__()
        self.normalized = normalized
        self.register_buffer("c", torch.tensor([COLOURS[n] for n in ("red", "green", "blue")]) / 255.0)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.detect = nn.Identity()
        self.presence = nn.Identity()
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        if self.normalized:
            x = x * self.std + self.mean
        d = (x[:, None] - self.c[None, :, :, None, None]).norm(dim=2)
        maps = self.detect((1 - d / 0.35).clamp_min(0))
        m = maps.amax((2, 3))
        p = m * (m > 0.5)
        units = torch.cat([p, (p[:, :1] * (p[:, 1:2] == 0)), torch.zeros_like(p[:, :1])], 1)
        return self.head(self.presence(units))


def presence_model(normalized: bool = False) -> LoadedModel:
    from torchvision import transforms as T

    transform = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    return LoadedModel(name="presencenet", model=PresenceNet(normalized).eval(), transform=transform,
                       weights="hand-built", input_size=(3, 32, 32))


def _hist(x: torch.Tensor) -> torch.Tensor:
    bins = (x / 64).floor().clamp(0, 3).long()
    return torch.nn.functional.one_hot(bins, 4).float().mean((2, 3)).flatten(1)


class ColourBackend(Backend):
    """A 12-d colour-histogram embedding; its text tower maps colour words to their colours' histograms."""

    dim = 12

    def __init__(self, name: str = "labeltest", text: bool = True):
        super().__init__("cpu")
        self.name, self.has_text = name, text

    def preprocess(self, image):
        return torch.from_numpy(np.asarray(image.convert("RGB").resize((8, 8), Image.NEAREST), dtype=np.float32)
                                .copy()).permute(2, 0, 1)

    def encode_images(self, batch):
        return torch.nn.functional.normalize(_hist(batch), dim=-1)

    def encode_text(self, texts):
        if not self.has_text:
            return super().encode_text(texts)
        out = []
        for t in texts:
            words = [w for w in ("red", "green", "blue") if w in t.lower()]
            hist = [_hist(torch.tensor(COLOURS[w], dtype=torch.float32).view(1, 3, 1, 1))[0] for w in words]
            out.append(sum(hist) if hist else torch.ones(12))
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)


def register_colour_backends() -> None:
    from unitlens.backends.base import register_backend

    register_backend("labeltest")(lambda spec, device=None, **kw: ColourBackend("labeltest", True))
    register_backend("labeltest-notext")(lambda spec, device=None, **kw: ColourBackend("labeltest-notext", False))


COMBOS = [("red",), ("green",), ("blue",), ("red", "green"), ("red", "blue"), ("green", "blue"), ()]
