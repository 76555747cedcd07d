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


def fmix32_rank(i: int, seed: int = 0) -> int:
    """murmur3's 32-bit finaliser of (id + seed * golden ratio), in plain Python integers (the tie-break rank)."""
    x = (i + seed * 0x9E3779B9) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


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


def colour_histogram(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) 0..255 floats -> (B, 12) per-channel 4-bin histograms (noise σ = 6 never crosses a bin edge)."""
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
        return torch.nn.functional.normalize(colour_histogram(batch), dim=-1)

    def encode_text(self, texts):
        if not self.has_text:
            return super().encode_text(texts)
        out = []
        for t in texts:
            words = [w for w in ("red", "green", "blue") if w in t.lower()]
            hist = [colour_histogram(torch.tensor(COLOURS[w], dtype=torch.float32).view(1, 3, 1, 1))[0] for w in words]
            out.append(sum(hist) if hist else torch.ones(12))
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)


def register_colour_backends() -> None:
    from unitlens.backends.base import BACKENDS

    if "labeltest" in BACKENDS:  # registered by an earlier test module
        return
    BACKENDS.register("labeltest", lambda spec, device=None, **kw: ColourBackend("labeltest", True))
    BACKENDS.register("labeltest-notext", lambda spec, device=None, **kw: ColourBackend("labeltest-notext", False))


COMBOS = [("red",), ("green",), ("blue",), ("red", "green"), ("red", "blue"), ("green", "blue"), ()]


# ---------------------------------------------------------------------------------------------- explorer atlases
# Shared by tests/test_explorer.py and tests/test_explorer_browser.py: two small atlases of hand-built colour
# detectors (record, MIS, lens, labels, measures, relevance, audit, a figure), a second atlas whose folder has the
# same name, and a study folder with copies of both. 30 noisy solid images per colour (ids: blue 0-29, green 30-59,
# grey 60-89, red 90-119), so a detector's 25 MIS exemplars are its colour and its least activating ones (all 0)
# a seeded draw of the other colours (the record pass's tie-break).
class ExplorerBackend:
    """Factory of the explorer tests' backend: colour histograms; text maps colour words to their histogram."""

    @staticmethod
    def build(spec=None, device=None, **kw):
        from unitlens.backends.base import Backend

        class HistogramBackend(Backend):
            name, dim, has_text = "explorertest", 12, True

            def preprocess(self, image):
                arr = np.asarray(image.convert("RGB").resize((8, 8), Image.NEAREST), dtype=np.float32)
                return torch.from_numpy(arr.copy()).permute(2, 0, 1)

            def encode_images(self, batch):
                return self._finish(colour_histogram(batch))

            def encode_text(self, texts):
                hist = {n: colour_histogram(torch.tensor(c, dtype=torch.float32).view(1, 3, 1, 1))[0]
                        for n, c in COLOURS.items()}
                out = [sum(hist[w] for w in COLOURS if w in t.lower()) if any(w in t.lower() for w in COLOURS)
                       else torch.ones(12) for t in texts]
                return self._finish(torch.stack(out))

        return HistogramBackend("cpu")


class ColourDetectors(nn.Module):
    """``detect``: per-pixel detectors relu(1 − ‖x − c‖ / 0.35) of the given colours, a constant-zero unit and
    their sum; ``pool``: 4×4 average pooling of them; the head reads the pooled means."""

    def __init__(self, colours=("red", "green", "blue", "grey")):
        super().__init__()
        self.register_buffer("c", torch.tensor([COLOURS[n] for n in colours], dtype=torch.float32) / 255)
        self.detect = nn.Identity()
        self.pool = nn.AvgPool2d(4)
        self.head = nn.Linear(len(colours) + 2, 2)

    def forward(self, x):
        d = (x[:, None] - self.c[None, :, :, None, None]).norm(dim=2)
        units = (1 - d / 0.35).clamp_min(0)
        h = self.detect(torch.cat([units, torch.zeros_like(units[:, :1]), units.sum(1, keepdim=True)], 1))
        return self.head(self.pool(h).mean((2, 3)))


def colour_atlas(data: Path, out: Path, colours=("red", "green", "blue", "grey")) -> Path:
    from torchvision import transforms as T

    from unitlens.recording import record
    from unitlens.zoo import enumerate_units

    model = LoadedModel(name="colourdetectors", model=ColourDetectors(colours).eval(),
                        transform=T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]), weights="hand-built",
                        input_size=(3, 32, 32))
    record(model, str(data), out, enumerate_units(model.model, include=["detect", "pool"]), k=30, batch_size=16,
           num_workers=0, progress=False)
    return out


@pytest.fixture(scope="session")
def explorer_atlases(tmp_path_factory) -> dict:
    """``a`` (every result), ``b`` (lens only; its folder is also named ``demo``), ``study``, ``data``, ``root``."""
    import json
    import shutil

    import pandas as pd

    from unitlens.audit import audit_class
    from unitlens.backends.base import BACKENDS
    from unitlens.lens import embed_units, label, measures
    from unitlens.mis import score_mis
    from unitlens.relevance.store import write_result
    from unitlens.study import write_summary

    if "explorertest" not in BACKENDS:
        BACKENDS.register("explorertest", ExplorerBackend.build)
    backend = ExplorerBackend.build()
    root = tmp_path_factory.mktemp("explorer")
    rng = np.random.default_rng(0)
    data = root / "data"
    for name, rgb in COLOURS.items():
        (data / name).mkdir(parents=True)
        for i in range(30):
            arr = np.clip(np.array(rgb)[None, None] + rng.normal(0, 6, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(data / name / f"{name}_{i}.png")
    a = colour_atlas(data, root / "a" / "demo")
    score_mis(a, backend=backend, n_tasks=5, k_expl=4, progress=False)
    embed_units(a, backend, m=5, progress=False)
    label(a, ["red", "green", "blue", "grey"], backend=backend)
    measures(a, backend)
    rel = pd.DataFrame([{"layer": layer, "unit": u, "class_index": 0, "class_name": "red", "rel_mean": share,
                         "rel_max": 2 * share, "rel_raw_mean": share, "n_samples": 10, "top_ids": [u, u + 1]}
                        for layer in ("detect", "pool")
                        for u, share in enumerate([0.40, 0.05, 0.10, 0.02, 0.0, 0.30])])
    write_result(a, "class_0", rel, {"class_name": "red", "description": "red", "samples": "top5", "n_samples": 10})
    audit_class(a, 0, ["red"], ["blue"], backend=backend, other_classes=rel.iloc[:0])
    (a / "figures").mkdir()
    Image.new("RGB", (40, 20), (200, 220, 255)).save(a / "figures" / "mis_by_layer.png")
    b = colour_atlas(data, root / "b" / "demo", ("red", "green", "blue"))
    embed_units(b, backend, m=5, progress=False)
    study = root / "studies" / "colours"
    (study / "atlases").mkdir(parents=True)
    shutil.copytree(a, study / "atlases" / "rgb-grey")
    shutil.copytree(b, study / "atlases" / "rgb")
    (study / "study.toml").write_text('name = "colour-study"\ndata = "images"\n')

    def entry(name: str, mis: str, error: str = "") -> dict:  # a study.json record (see unitlens.study.folder)
        steps = {"record": "done", "mis": mis, "lens": "done"}
        return {"name": name, "model": "colourdetectors", "data": str(data), "atlas": f"atlases/{name}", "steps": {
            s: {"options": {}, "status": st, "error": error if st == "failed" else "", "seconds": 1.0, "result": {}}
            for s, st in steps.items()}}

    (study / "study.json").write_text(json.dumps({"format": 2, "name": "colour-study", "entries": [
        entry("rgb", "failed", "out of memory"), entry("rgb-grey", "done")]}))
    write_summary(study)  # the stamped study table, from the two atlases
    (study / "figures").mkdir()
    Image.new("RGB", (40, 20), (255, 220, 200)).save(study / "figures" / "ranking.png")
    return {"a": a, "b": b, "study": study, "data": data, "root": root, "backend": backend}
