"""GPU suite: the record pass against a bare forward, the MIS scorer and polysemanticity, in one table.

    python benchmarks/gpu_suite.py                          # on the GPU (about 3-5 minutes on one H100/H200)
    python benchmarks/gpu_suite.py --device cpu --small     # seconds on a CPU: what the test suite runs
                                                            # (timm's 160-px test_resnet / test_vit, tiny sizes)

Self-contained: synthetic 224-px images (smooth random colour fields, written once as PPM files into a
temporary folder), random weights, no dataset and no network. Rows:

- **record pass vs bare forward**, ResNet-50 (torchvision architecture, every analysable layer: Conv,
  BatchNorm, Linear) and ViT-B/16 (timm), batch ``--batch-size`` (256), float32 and bfloat16 (``torch.autocast``
  around both sides; on CUDA, float32 convolutions and matmuls use TF32 as torch's defaults allow):
  - ``bare``: ``model(x)`` on a batch already on the device (channels-last), no hooks, median of timed batches;
  - ``record``: the public ``unitlens.recording.record`` over the image files, k = 200 both directions + stats,
    checkpoints every 2,048 images as by default. Its rate is the steady state: the images of a long run minus
    those of a short run over the seconds between their passes (``RecordResult.seconds``, which leaves out
    writing the atlas), so the loader start-up and the first-batch allocations cancel;
  - ``loader``: the same DataLoader (workers, pinned memory) without the model, the ceiling the files set;
  - ``ratio``: record time per image / bare time per image (the target is <= 1.05).
  The images reach the model as uint8 tensors decoded from PPM (the transform only reorders the array), and a
  wrapper module converts and normalises them on the device, on both sides alike, so the data path stays as
  close to "from decoded tensors" as ``record`` allows without a hook for in-memory tensors.
- **MIS scorer**: ``unitlens.mis.score`` on ``--mis-units`` synthetic units (random exemplar ids), once by
  gathering from an (images, 512) embedding table and once from the Gram matrix of 1,000 images of D = 1280
  (an atlas of a small dataset), checked against float64 on the CPU for 64 units.
- **polysemanticity**: ``unitlens.lens.unit_measures.polysemanticity`` on ``--poly-units`` units of m = 30
  normalised examples (D = 1280), 10 restarts.
- **DISTS similarity matrix**: ``similarity`` of the ``dists`` backend (VGG16, random weights) over 512 images
  of 224 px, all pairs, in pairs/s: what MIS with a pairwise backend costs (``benchmarks/pairwise_mis.py``
  compares it with an embedding backend); checked to be symmetric with a zero diagonal.
- **feature visualisation**: ``unitlens.featviz.visualize`` of the first ``featviz_units`` channels of ResNet-50's
  ``layer4`` (random weights), 224 px, the GPU defaults (512 steps, 9 images up and 9 down per unit, 16 units per
  batch, the forward stopped at ``layer4``), in units/s.

Peak GPU memory is ``torch.cuda.max_memory_allocated`` over each row.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from unitlens.backends import load_backend
from unitlens.data.datasets import collate_readable, load_dataset
from unitlens.lens.unit_measures import polysemanticity
from unitlens.mis.scoring import score
from unitlens.mis.tasks import build_tasks
from unitlens.recording import record
from unitlens.runtime import prepare_model
from unitlens.zoo.factory import LoadedModel, load_model

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Settings:
    models: tuple[tuple[str, str], ...]
    image_size: int
    images: int
    batch_size: int
    timed_batches: int
    mis_units: int
    mis_images: int
    poly_units: int
    pairwise_images: int
    pairwise_size: int
    featviz: tuple[str, str, int, int, int, int]  # model, layer, units, steps, size, images per side


FULL = Settings(models=(("ResNet-50", "torchvision:resnet50"), ("ViT-B/16", "timm:vit_base_patch16_224")),
                image_size=224, images=8192, batch_size=256, timed_batches=10, mis_units=100_000, mis_images=50_000,
                poly_units=20_000, pairwise_images=512, pairwise_size=224,
                featviz=("torchvision:resnet50", "layer4", 32, 512, 224, 9))
SMALL = Settings(models=(("test ResNet", "timm:test_resnet"), ("test ViT", "timm:test_vit")),  # timm's 160-px test nets
                 image_size=160, images=8, batch_size=4, timed_batches=2, mis_units=1_000, mis_images=5_000,
                 poly_units=64, pairwise_images=8, pairwise_size=32,
                 featviz=("timm:test_resnet", "layer4", 2, 2, 32, 1))


class Normalised(nn.Module):
    """uint8 (B, 3, H, W) images -> the ImageNet-normalised float input of ``model``, computed on its device."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x.float() - self.mean) / self.std)


def chw_uint8(img: Image.Image) -> torch.Tensor:
    """The decoded image as a (3, H, W) uint8 tensor (no resize: the images have the model's input size)."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


def make_images(folder: Path, n: int, size: int = 224, seed: int = 0) -> Path:
    """``n`` smooth random colour fields as PPM files; returns the folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    coarse = rng.integers(0, 256, (n, 7, 7, 3), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(coarse[i]).resize((size, size), Image.BILINEAR).save(folder / f"img_{i:05d}.ppm")
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def measured(device: torch.device):
    """Peak device memory of the block (GiB, None on the CPU) in the yielded dict."""
    out: dict = {"peak": None}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        out["peak"] = torch.cuda.max_memory_allocated(device) / 2**30


def precision(dtype: str, device: torch.device):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bare_rate(net: nn.Module, batch: torch.Tensor, n_batches: int, dtype: str, device: torch.device) -> float:
    """Images/s of ``net(batch)``: one warm-up batch, then the median of ``n_batches`` timed ones."""
    times = []
    with torch.inference_mode(), precision(dtype, device):
        for i in range(n_batches + 1):
            sync(device)
            t = time.perf_counter()
            net(batch)
            sync(device)
            if i:
                times.append(time.perf_counter() - t)
    return len(batch) / statistics.median(times)


def loader_rate(folder: Path, batch_size: int, workers: int, device: torch.device) -> float:
    """Images/s of the DataLoader alone, as record builds it (files -> pinned uint8 batches on the device)."""
    data = load_dataset(str(folder), chw_uint8)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, num_workers=workers,
                                         collate_fn=collate_readable, pin_memory=device.type == "cuda")
    t, n = time.perf_counter(), 0
    for images, _, _ in loader:
        images.to(device, non_blocking=True)
        n += len(images)
    sync(device)
    return n / (time.perf_counter() - t)


def record_rate(loaded: LoadedModel, short: Path, full: Path, n_short: int, n_full: int, work: Path,
                args, dtype: str, device: torch.device) -> tuple[float, float, int]:
    """Steady-state record images/s (long run minus short run), the long run's wall images/s, and its units."""
    runs = {}
    for name, data in (("short", short), ("full", full)):
        with precision(dtype, device):
            t = time.perf_counter()
            res = record(loaded, str(data), work / f"{name}-{dtype}", layers=None, k=200, batch_size=args.batch_size,
                         device=str(device), num_workers=args.workers, progress=False, force=True,
                         keep_first_last=True)
            runs[name] = (res.seconds, time.perf_counter() - t, res.atlas.manifest.n_units)
    extra = runs["full"][0] - runs["short"][0]
    steady = (n_full - n_short) / extra if extra > 0 else n_full / runs["full"][0]  # tiny runs: timing noise
    return steady, n_full / runs["full"][1], runs["full"][2]


def record_rows(label: str, spec: str, folders: tuple[Path, Path, int, int], work: Path, args,
                device: torch.device) -> list[dict]:
    base = load_model(spec, pretrained=False)
    net = Normalised(base.model).eval()
    loaded = LoadedModel(name=spec, model=net, transform=chw_uint8, weights="random")
    short, full, n_short, n_full = folders
    batch = torch.stack([chw_uint8(Image.open(p).convert("RGB")) for p in sorted(full.glob("*.ppm"))[:args.batch_size]])
    if len(batch) < args.batch_size:
        batch = batch.repeat(math.ceil(args.batch_size / len(batch)), 1, 1, 1)[:args.batch_size]
    rows = []
    for dtype in ("fp32", "bf16"):
        with measured(device) as bare_mem:
            ready = prepare_model(net, device)
            x = batch.to(device).contiguous(memory_format=torch.channels_last)
            bare = bare_rate(ready, x, args.timed_batches, dtype, device)
        del x
        with measured(device) as rec_mem:
            steady, wall, units = record_rate(loaded, short, full, n_short, n_full, work, args, dtype, device)
        loader = loader_rate(full, args.batch_size, args.workers, device)
        peaks = [m["peak"] for m in (bare_mem, rec_mem) if m["peak"] is not None]
        rows.append({"item": f"{label} record pass", "units": units, "dtype": dtype, "bare img/s": bare,
                     "unitlens": steady, "rate": "img/s", "ratio": bare / steady, "loader img/s": loader,
                     "end to end img/s": wall, "peak GiB": max(peaks) if peaks else None})
    return rows


def mis_rows(args, settings: Settings, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for kind, n_images, dim in (("gather", settings.mis_images, 512), ("gram", 1000, 1280)):
        table = F.normalize(torch.randn(n_images, dim, generator=g), dim=1)
        top = torch.randint(0, n_images, (settings.mis_units, 200), generator=g)
        bottom = torch.randint(0, n_images, (settings.mis_units, 200), generator=g)
        with measured(device) as mem:
            t_dev, top_dev, bottom_dev = table.to(device), top.to(device), bottom.to(device)
            res = score(t_dev, build_tasks(top_dev, bottom_dev), method=kind, device=device)  # warm-up
            times = []
            for _ in range(3):
                sync(device)
                t = time.perf_counter()
                res = score(t_dev, build_tasks(top_dev, bottom_dev), method=kind, device=device)
                res.mis.sum().item()
                times.append(time.perf_counter() - t)
        ref = score(table.double(), build_tasks(top[:64], bottom[:64]), method=kind, device="cpu").mis
        err = float((res.mis[:64].double().cpu() - ref).abs().max())
        assert err < 1e-5, f"MIS on {device} differs from float64 on the CPU by {err:.2e}"
        rate = settings.mis_units / statistics.median(times)
        rows.append({"item": f"MIS scorer, {kind} ({n_images:,} images, D={dim})", "units": settings.mis_units,
                     "dtype": "fp32", "unitlens": rate, "rate": "units/s", "error": err, "peak GiB": mem["peak"]})
    return rows


def poly_rows(settings: Settings, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    n = settings.poly_units
    centres = F.normalize(torch.randn(n, 2, 1280, generator=g), dim=-1)
    pick = torch.randint(0, 2, (n, 30), generator=g)
    E = F.normalize(centres.gather(1, pick[..., None].expand(-1, -1, 1280)) + torch.randn(n, 30, 1280, generator=g)
                    / math.sqrt(1280), dim=-1)
    with measured(device) as mem:
        E_dev = E.to(device)
        polysemanticity(E_dev[: min(n, 64)])  # warm-up
        sync(device)
        t = time.perf_counter()
        poly = polysemanticity(E_dev)
        sync(device)
        seconds = time.perf_counter() - t
    assert torch.isfinite(poly).all()
    return [{"item": "polysemanticity (m=30, D=1280)", "units": n, "dtype": "fp32", "unitlens": n / seconds,
             "rate": "units/s", "peak GiB": mem["peak"]}]


def pairwise_rows(settings: Settings, device: torch.device) -> list[dict]:
    n, size = settings.pairwise_images, settings.pairwise_size
    backend = load_backend("dists+random", device=device, size=size)
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(2))
    with measured(device) as mem:
        backend.similarity(x[:2], x[:2])  # warm-up
        sync(device)
        t = time.perf_counter()
        sim = backend.similarity(x, x)
        sync(device)
        seconds = time.perf_counter() - t
    err = max(float(sim.diagonal().abs().max()), float((sim - sim.T).abs().max()))
    assert err < 1e-4, f"the DISTS matrix is not symmetric with a zero diagonal (off by {err:.1e})"
    return [{"item": f"DISTS similarity matrix ({n} images, {size} px)", "units": n * n, "dtype": "fp32",
             "unitlens": n * n / seconds, "rate": "pairs/s", "peak GiB": mem["peak"]}]
def featviz_rows(settings: Settings, device: torch.device) -> list[dict]:
    from unitlens.featviz import visualize

    spec, layer, units, steps, size, per_side = settings.featviz
    model = load_model(spec, pretrained=False).model
    with measured(device) as mem:
        sync(device)
        t = time.perf_counter()
        res = visualize(model, units=range(units), layers=[layer], steps=steps, size=size, per_side=per_side,
                        device=str(device), progress=False)
        sync(device)
        seconds = time.perf_counter() - t
    assert len(res.table) == 2 * per_side * units and bool(torch.isfinite(torch.tensor(res.table["activation"])).all())
    name = spec.split(":")[-1]
    return [{"item": f"feature visualisation, {name} {layer} ({steps} steps, {size} px, {per_side} per side, "
                     f"batch {res.options.batch_size})", "units": units, "dtype": "fp32", "unitlens": units / seconds,
             "rate": "units/s", "peak GiB": mem["peak"]}]


def run(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    ap.add_argument("--small", action="store_true", help="tiny models and sizes: a few seconds on a CPU")
    ap.add_argument("--images", type=int, default=None, help="images of the long record run (short: a quarter)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 2, up to 12)")
    ap.add_argument("--work", default=None, help="folder for the images and atlases (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 with --small, where the CPU is shared; else torch's choice)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = args.threads or (1 if args.small else None)
    if threads:
        torch.set_num_threads(threads)
    settings = SMALL if args.small else FULL
    args.batch_size = args.batch_size or settings.batch_size
    args.timed_batches = settings.timed_batches
    args.workers = args.workers if args.workers is not None else (
        0 if args.small else max(1, min(12, (os.cpu_count() or 2) - 2)))
    n_full = args.images or settings.images
    n_short = max(1, n_full // 4)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() if args.work is None else contextlib.nullcontext(args.work) as tmp:
        work = Path(tmp)
        full = make_images(work / "images", n_full, settings.image_size)
        listing = work / "short.txt"
        listing.write_text("\n".join(str(p) for p in sorted(full.glob("*.ppm"))[:n_short]) + "\n")
        rows = []
        for label, spec in settings.models:
            rows += record_rows(label, spec, (listing, full, n_short, n_full), work, args, device)
        rows += mis_rows(args, settings, device)
        rows += poly_rows(settings, device)
        rows += pairwise_rows(settings, device)
        rows += featviz_rows(settings, device)
    table = pd.DataFrame(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(f"unitlens GPU suite on {name}, torch {torch.__version__}; {settings.image_size}-px images, record runs of "
          f"{n_short} and {n_full} images, batch {args.batch_size}, {args.workers} loader workers; "
          f"{time.perf_counter() - t0:.0f} s")
    print(formatted(table).to_string(index=False))
    return table


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The printed table: rates with thousands separators and their unit, blanks for what a row does not have."""
    def rate(v, unit="img/s"):
        return "" if pd.isna(v) else f"{v:,.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"

    return pd.DataFrame({
        "item": table["item"], "units": table["units"].map("{:,}".format), "dtype": table["dtype"],
        "bare forward": table["bare img/s"].map(rate),
        "unitlens": [rate(v, u) for v, u in zip(table["unitlens"], table["rate"])],
        "record/bare": table["ratio"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}"),
        "loader": table["loader img/s"].map(rate), "end to end": table["end to end img/s"].map(rate),
        "peak GPU": table["peak GiB"].map(lambda v: "-" if pd.isna(v) else f"{v:.1f} GiB"),
        "vs float64": table["error"].map(lambda v: "" if pd.isna(v) else f"{v:.0e}"),
    })


if __name__ == "__main__":
    run()
