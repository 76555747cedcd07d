"""Recording a 4,096-feature basis against the record pass of the same layer, in one run.

    python benchmarks/basis_record.py [--images 256] [--repeats 3] [--layer blocks.6.0.conv_pwl] [--device cpu]

On offline EfficientNet-Lite0 over the first ``--images`` demo images, it times (median of ``--repeats``):

- ``record``: ``unitlens.record`` of the layer's channels (k = 200, both directions and statistics);
- ``basis image``: ``record_bases`` of a 4,096-feature basis fitted on the per-image vectors (one (B, C) x (C, F)
  product per batch, then the same streaming state for 4,096 units);
- ``basis spatial``: the same for a basis fitted on every position (the product runs on B x H x W rows, then the
  features are averaged over positions);
- ``forward``: the bare forward pass up to the layer, for scale.

The bases are random orthogonal directions (a matrix product costs the same whatever its values; fitting an SAE
would only add minutes here). Each basis pass is timed with ``--force`` on the same atlas and the same images.
It prints one table and the ratios to ``record``. Image loading differs a little: the record pass decodes with a
``DataLoader`` (worker processes), the basis pass with ``load_batches`` (threads); ``forward`` runs on images decoded
beforehand.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from unitlens.atlas import Atlas
from unitlens.basis import FitOptions, fit_basis, record_bases
from unitlens.data import load_dataset
from unitlens.record import record
from unitlens.runtime import OutputCapture, pick_device, prepare_model
from unitlens.zoo import enumerate_units, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layer", default="blocks.6.0.conv_pwl")
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model = load_model("efficientnet_lite0")
    full = load_dataset("demo", model.transform)
    listing = Path(tempfile.mkdtemp(prefix="basis-bench-")) / "images.txt"
    listing.write_text("\n".join(str(full.path(i)) for i in range(min(args.images, len(full)))) + "\n")
    data = load_dataset(str(listing), model.transform)
    infos = enumerate_units(model.model, include=[args.layer])
    channels, out = listing.parent / "channels", listing.parent / "atlas"
    record(model, data, out, infos, batch_size=args.batch_size, device=device, progress=False)
    for positions in ("image", "spatial"):  # random directions: no training; fitted once, recorded every repeat
        fit_basis(out, args.layer, positions, FitOptions("random", features=args.features, device=args.device),
                  positions=positions, model=model, progress=False)
    inputs = [torch.stack([data[i][0] for i in range(s, min(s + args.batch_size, len(data)))])
              for s in range(0, len(data), args.batch_size)]
    times: dict[str, list[float]] = {"record": [], "basis image": [], "basis spatial": [], "forward": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        record(model, data, channels, infos, batch_size=args.batch_size, device=device, force=True, progress=False)
        times["record"].append(time.perf_counter() - t)
        for positions in ("image", "spatial"):
            t = time.perf_counter()
            record_bases(out, [positions], model=model, batch_size=args.batch_size, device=device, force=True,
                         progress=False)
            times[f"basis {positions}"].append(time.perf_counter() - t)
        net = prepare_model(model.model, device)
        t = time.perf_counter()
        with OutputCapture(net, [args.layer]) as capture, torch.inference_mode():
            for x in inputs:
                capture.run(x.to(device).contiguous(memory_format=torch.channels_last))
        times["forward"].append(time.perf_counter() - t)

    atlas = Atlas(out)
    n = len(data)
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"{n} demo images, layer {args.layer} ({atlas.layer(args.layer).width} channels), "
          f"{args.features}-feature bases, device {device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"{'pass':<16}{'seconds':>10}{'images/s':>11}{'ratio to record':>17}   all repeats (s)")
    for key, value in median.items():
        runs = ", ".join(f"{v:.2f}" for v in times[key])
        print(f"{key:<16}{value:>10.2f}{n / value:>11.1f}{value / median['record']:>17.2f}   {runs}")
    print("record: the record pass of the layer's channels (full forward, k=200 state, atlas written); basis: forward "
          "up to the layer + encoder + the same state for the basis's features (derived layer written)")


if __name__ == "__main__":
    main()
