"""K separate ``record`` runs against one ``record_many`` over the same K models and images, data loading included.

What: on N images of a dataset (evenly spread), in one process and one run, this times

1. ``separate``     ``unitlens.recording.record`` once per model, each with its own data loading (read, decode,
                    preprocess in its DataLoader worker) and atlas;
2. ``record_many``  ``unitlens.recording.record_many`` over the same models: every image read and decoded once, one
                    preprocessing per distinct transform, every model fed from the same batches;

and, to say where the time goes, 3. ``decode``: ``open_rgb`` of the N images in this process (what ``separate``
does K times and ``record_many`` once) and 4. ``transform``: each distinct model transform on the decoded images.
The two variants alternate over ``--repeats`` rounds (order swapped every round, so background load on a shared
machine hits both); medians are reported. Sanity check: the atlases of the two variants are identical.

Run (from the repository root), e.g. four checkpoints of the clip-art CNN's architecture, or the three Lite models:

    .venv/bin/python benchmarks/record_many.py --models 'timm:resnet10t?num_classes=22&input_size=64*4' --images 500
    .venv/bin/python benchmarks/record_many.py --models efficientnet_lite0,efficientnet_lite1,efficientnet_lite2

``NAME*K`` repeats a model K times (separate LoadedModels with the same weights: the timing is what matters).
Random init is used for ``timm:``/``torchvision:`` names (``--pretrained`` for their hub weights).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from unitlens.atlas import Atlas
from unitlens.data import ImageDataset, load_dataset
from unitlens.data.images import open_rgb
from unitlens.recording import record, record_many
from unitlens.recording.passes import transform_key
from unitlens.zoo import load_model


def parse_models(text: str) -> list[str]:
    names = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.rpartition("*") if part.rpartition("*")[2].isdigit() else (part, "", "1")
        names += [name] * int(count)
    return names


def subset(data: ImageDataset, n: int | None) -> ImageDataset:
    if not n or n >= len(data):
        return data
    idx = torch.linspace(0, len(data) - 1, n).round().long().unique().tolist()
    return ImageDataset(data.samples.iloc[idx].drop(columns=["id"]), data.spec)


def same_atlas(a: Atlas, b: Atlas) -> bool:
    if not a.units().equals(b.units()):
        return False
    for info in a.layers:
        x, y = a.exemplars(info.name), b.exemplars(info.name)
        if not all(torch.equal(getattr(x, f), getattr(y, f)) for f in ("top_ids", "top_vals", "bottom_ids",
                                                                          "bottom_vals")):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="timm:resnet10t?num_classes=22&input_size=64*4",
                    help="comma-separated model names; NAME*K repeats one K times")
    ap.add_argument("--data", default="demo")
    ap.add_argument("--images", type=int, default=500, help="images evenly spread over the dataset (0: all)")
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: record's)")
    ap.add_argument("--pretrained", action="store_true", help="hub weights for timm:/torchvision: names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = parse_models(args.models)
    models = [load_model(n, pretrained=args.pretrained or ":" not in n.partition("?")[0]) for n in names]
    data = subset(load_dataset(args.data), args.images)
    n = len(data)
    print(f"{len(models)} models ({', '.join(dict.fromkeys(names))}), {n} images of {args.data}, k={args.k}, "
          f"batch {args.batch_size}, {args.threads} threads, {args.repeats} rounds", flush=True)

    t0 = time.perf_counter()
    decoded = [open_rgb(data.path(i)) for i in range(n)]
    t_decode = time.perf_counter() - t0
    distinct = {}
    for m in models:
        distinct.setdefault(transform_key(m.transform), m.transform)
    t_transform = []
    for transform in distinct.values():
        t0 = time.perf_counter()
        for image in decoded:
            transform(image)
        t_transform.append(time.perf_counter() - t0)
    del decoded

    options = {"k": args.k, "batch_size": args.batch_size, "num_workers": args.workers, "progress": False}
    times: dict[str, list[float]] = {"separate": [], "record_many": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for r in range(args.repeats):
            for variant in (("separate", "record_many") if r % 2 == 0 else ("record_many", "separate")):
                outs = [root / f"{variant}-{r}-{i}" for i in range(len(models))]
                t0 = time.perf_counter()
                if variant == "separate":
                    for m, out in zip(models, outs):
                        record(m, data, out, **options)
                else:
                    record_many(models, data, outs, **options)
                times[variant].append(time.perf_counter() - t0)
                print(f"round {r + 1}: {variant} {times[variant][-1]:.1f} s", flush=True)
        identical = all(same_atlas(Atlas(root / f"separate-0-{i}"), Atlas(root / f"record_many-0-{i}"))
                        for i in range(len(models)))
    sep, many = statistics.median(times["separate"]), statistics.median(times["record_many"])
    k = len(models)
    print(f"\nseparate ({k} record runs): {sep:.1f} s ({k * n / sep:.1f} model-images/s)")
    print(f"record_many (one pass):     {many:.1f} s ({k * n / many:.1f} model-images/s)")
    print(f"ratio separate / record_many: {sep / many:.2f}x")
    print(f"decode (open_rgb, {n} images, one thread): {t_decode:.1f} s per pass; the {k} separate runs decode "
          f"{k}x = {k * t_decode:.1f} s, {100 * k * t_decode / sep:.0f} % of their wall time (decoding runs in the "
          f"loader's worker process beside the forward passes, so this share can pass 100 %); record_many decodes once")
    print(f"preprocessing: {len(distinct)} distinct transform(s), {', '.join(f'{t:.1f} s' for t in t_transform)} per "
          f"pass over the images; separate runs apply one per model ({k}x)")
    print(f"atlases identical: {identical}")
    if not identical:
        sys.exit("error: record_many and separate records disagree")


if __name__ == "__main__":
    main()
