"""The record pass of one layer with and without a 4,096-feature basis, as a ratio, in one run.

    python benchmarks/basis_record.py [--images 256] [--repeats 3] [--layer blocks.6.0.conv_pwl] [--device cpu]

On offline EfficientNet-Lite0 over the first ``--images`` demo images (decoded beforehand), batch by batch and
interleaved, so that a shared machine's load hits every part alike, it times:

- ``forward``: the forward pass up to the layer (``OutputCapture``, stopped there);
- ``channels``: what the record pass does with the layer's output — the spatial mean and the streaming state
  (``LayerState``, k = 200 both directions and statistics) of its channels;
- ``basis image``: the per-image vector through a 4,096-feature encoder (one (B, C) x (C, F) product) into a
  ``LayerState`` of 4,096 units — what ``unitlens basis record`` adds for a basis fitted with ``--positions image``;
- ``basis spatial``: every position through the encoder (a (B·H·W, C) x (C, F) product), averaged over positions,
  into the state — the same for a basis fitted with ``--positions spatial``.

It prints the totals and, per repeat and as their median, the ratio (forward + channels + basis) / (forward +
channels): the record pass of the layer with the basis against without it. The encoder is random orthogonal
directions with a ReLU and top-32 (a matrix product costs the same whatever its values). Then, for scale, the
end-to-end passes over the same images, fastest of ``--repeats``: ``unitlens.recording`` of the layer (full forward,
atlas written) and ``record_bases`` of each basis (forward to the layer, derived layer written).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

from unitlens.basis import fit_basis, random_directions, record_bases
from unitlens.basis.encoder import Encoder
from unitlens.basis.recording import basis_features
from unitlens.data import load_dataset
from unitlens.recording import LayerState, record
from unitlens.recording.reduce import reduce_output
from unitlens.runtime import OutputCapture, pick_device, prepare_model
from unitlens.zoo import enumerate_units, load_model


def interleaved(model, inputs, layer: str, encoder: Encoder, device, k: int = 200) -> dict[str, float]:
    """Seconds of each part over all batches, each batch timing every part in turn."""
    net = prepare_model(model.model, device)
    states: dict[str, LayerState] = {}
    spent = {"forward": 0.0, "channels": 0.0, "basis image": 0.0, "basis spatial": 0.0}

    @contextlib.contextmanager
    def timed(key: str):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize()
        spent[key] += time.perf_counter() - t

    def fold(key: str, acts: torch.Tensor, ids: torch.Tensor) -> None:
        if key not in states:
            states[key] = LayerState(acts.shape[1], k, device)
        states[key].update(acts, ids)

    start = 0
    with OutputCapture(net, [layer]) as capture, torch.inference_mode():
        for x in inputs:
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            ids = torch.arange(start, start + x.shape[0], device=device)
            start += x.shape[0]
            with timed("forward"):
                out = capture.run(x)[layer]
            with timed("channels"):
                fold("channels", reduce_output(out, 1), ids)
            for positions in ("image", "spatial"):
                with timed(f"basis {positions}"):
                    fold(f"basis {positions}", basis_features(out, encoder, positions, 1, "mean", "mean"), ids)
        for key, st in states.items():  # the final merges belong to each part too
            with timed(key):
                st.flush()
    return spent


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
    n = min(args.images, len(full))
    inputs = [torch.stack([full[i][0] for i in range(s, min(s + args.batch_size, n))])
              for s in range(0, n, args.batch_size)]
    width = enumerate_units(model.model, include=[args.layer])[0].width
    encoder = Encoder(weight=random_directions(width, args.features, 0), activation="topk", k=32).to(device)

    runs = [interleaved(model, inputs, args.layer, encoder, device) for _ in range(args.repeats)]
    print(f"{n} demo images, layer {args.layer} ({width} channels), {args.features}-feature basis, batch "
          f"{args.batch_size}, device {device}, torch threads {torch.get_num_threads()}, {args.repeats} repeats")
    print(f"{'part (per batch, interleaved)':<32}{'median (s)':>11}   all repeats (s)")
    for key in runs[0]:
        print(f"{key:<32}{statistics.median(r[key] for r in runs):>11.2f}   {', '.join(f'{r[key]:.2f}' for r in runs)}")
    for positions in ("image", "spatial"):  # the ratio within each repeat, then its median
        ratios = [(r["forward"] + r["channels"] + r[f"basis {positions}"]) / (r["forward"] + r["channels"])
                  for r in runs]
        print(f"record pass of the layer with / without a {positions} basis: {statistics.median(ratios):.3f}x "
              f"(repeats {', '.join(f'{x:.3f}' for x in ratios)})")

    listing = Path(tempfile.mkdtemp(prefix="basis-bench-")) / "images.txt"
    listing.write_text("\n".join(str(full.path(i)) for i in range(n)) + "\n")
    data = load_dataset(str(listing), model.transform)
    infos = enumerate_units(model.model, include=[args.layer])
    channels, out = listing.parent / "channels", listing.parent / "atlas"
    record(model, data, out, infos, batch_size=args.batch_size, device=device, progress=False)
    for positions in ("image", "spatial"):
        fit_basis(out, args.layer, positions, kind="random", features=args.features, device=args.device,
                  positions=positions, model=model, progress=False)
    ends: dict[str, list[float]] = {"unitlens record": [], "basis record image": [], "basis record spatial": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        record(model, data, channels, infos, batch_size=args.batch_size, device=device, force=True, progress=False)
        ends["unitlens record"].append(time.perf_counter() - t)
        for positions in ("image", "spatial"):
            t = time.perf_counter()
            record_bases(out, [positions], model=model, batch_size=args.batch_size, device=device, force=True,
                         progress=False)
            ends[f"basis record {positions}"].append(time.perf_counter() - t)
    print(f"{'end to end (image decoding included)':<38}{'images/s':>9}   all repeats (s)")
    for key, values in ends.items():
        print(f"{key:<38}{n / min(values):>9.1f}   {', '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
