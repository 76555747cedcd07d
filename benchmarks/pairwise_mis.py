"""What MIS with a pairwise backend (DISTS, LPIPS) costs against an embedding backend, measured in one run.

    python benchmarks/pairwise_mis.py                      # 224 px on the CPU (about 5 minutes on 2 busy cores)
    python benchmarks/pairwise_mis.py --device cuda --n 2000

MIS needs f(q, e) for the pairs of every task. An embedding backend embeds the n images the tasks use once
(n forwards) and takes dot products; a pairwise backend has no embedding, so ``unitlens.backends.PairwiseMatrix``
computes the (n, n) matrix in row blocks of R images: n(n+1)/2 pair comparisons and ``forwards(n, R)`` ≈ n + n²/(2R)
network forwards (R: the images whose features fit in the memory budget). This script measures, with random
weights of the real architectures (speed does not depend on the weights) on synthetic images:

- the forward rate (images/s) and the compare rate (pairs/s) of ``dists`` and ``lpips-alex``, and the embedding
  rate of ``offline`` (EfficientNet-Lite2), at ``--size`` px;
- a real matrix of ``--check`` images through ``PairwiseMatrix`` on a temporary atlas, against the time the two rates
  predict for it (the model the projection uses);
- the projected time of the similarity matrix of ``--n`` images for each backend, and its ratio to ``offline``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from unitlens.backends import PairwiseMatrix, load_backend
from unitlens.backends.pairwise import block_pairs, forwards, memory_budget
from unitlens.recording import record
from unitlens.zoo.factory import load_model


def synthetic(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    """Smooth random colour fields (upsampled noise), ``size`` px square."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
            for _ in range(n)]


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def pairwise_rates(backend, x: torch.Tensor) -> tuple[float, float, int]:
    """(images/s of ``features``, pairs/s of ``compare`` between two chunks, bytes of features per image)."""
    chunk = min(len(x), backend.chunk)
    a = x[:chunk]
    fa = backend.features(a)
    per_image = sum(f[:1].numel() * f.element_size() for f in fa)
    t_forward = timed(lambda: backend.features(a)) / chunk
    t_pair = timed(lambda: backend.compare(fa, fa)) / chunk ** 2
    return 1 / t_forward, 1 / t_pair, per_image


def projected(n: int, rows: int, img_s: float, pair_s: float) -> float:
    return forwards(n, rows) / img_s + n * (n + 1) / 2 / pair_s


def check_matrix(backend, images: list[Image.Image], work: Path, img_s: float, pair_s: float) -> tuple[float, float]:
    """(seconds of a real PairwiseMatrix over these images, seconds the rates predict)."""
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(folder / f"{i:05d}.png")
    loaded = load_model("timm:test_resnet", pretrained=False)  # any model: the atlas only lists the images
    atlas = record(loaded, str(folder), work / f"atlas-{backend.name}", ["conv1"], k=2, progress=False,
                   num_workers=0).atlas
    matrix = PairwiseMatrix(atlas, backend)
    t = time.perf_counter()
    matrix.get(list(range(len(images))), progress=False)
    seconds = time.perf_counter() - t
    n = len(images)
    rows = max(1, memory_budget(torch.device(backend.device)) // max(1, matrix_bytes(backend, images[0])))
    assert matrix.pairs == sum(block_pairs(n, s, rows) for s in range(0, n, rows))
    return seconds, projected(n, rows, img_s, pair_s)


def matrix_bytes(backend, image: Image.Image) -> int:
    return sum(f[:1].numel() * f.element_size() for f in backend.features(backend.preprocess(image)[None]))


def run(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=224, help="image size of the pairwise backends (px)")
    ap.add_argument("--n", type=int, default=1000, help="images of the projected MIS matrix")
    ap.add_argument("--check", type=int, default=24, help="images of the real matrix checked against the projection")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    images = synthetic(max(32, args.check), args.size)
    rows = []
    offline = load_backend("offline", device=device)
    batch = torch.stack([offline.preprocess(im) for im in images[:32]])
    embed_s = 32 / timed(lambda: offline.encode_images(batch))
    t_offline = args.n / embed_s  # the n² dot products are negligible next to the forwards
    rows.append({"backend": "offline (embedding)", "size": "its own", "features/img": "-", "img/s": embed_s,
                 "pairs/s": np.nan, f"n={args.n:,} (s)": t_offline, "vs offline": 1.0})
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("lpips-alex+random", "dists+random"):
            backend = load_backend(name, device=device, size=args.size)
            x = torch.stack([backend.preprocess(im) for im in images])
            img_s, pair_s, per_image = pairwise_rates(backend, x)
            block = max(1, memory_budget(device) // per_image)
            t_n = projected(args.n, block, img_s, pair_s)
            real, predicted = check_matrix(backend, images[:args.check], Path(tmp), img_s, pair_s)
            rows.append({"backend": name, "size": f"{args.size} px", "features/img": f"{per_image / 2**20:.1f} MiB",
                         "img/s": img_s, "pairs/s": pair_s, f"n={args.n:,} (s)": t_n, "vs offline": t_n / t_offline,
                         f"matrix of {args.check} (s)": real, "predicted (s)": predicted,
                         "rows/block": block, "forwards": forwards(args.n, block)})
    table = pd.DataFrame(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(f"pairwise MIS cost on {name}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"feature memory {memory_budget(device) / 2**30:.1f} GiB")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.3g}"))
    for row in rows[1:]:
        print(f"{row['backend']}: the similarity matrix of {args.n:,} images takes {row['vs offline']:,.2g}x the time "
              f"of embedding them with offline")
    return table


if __name__ == "__main__":
    run()
