"""Feature visualisations against Lucent on the same units: the activation our images reach over Lucent's.

    python benchmarks/featviz_lucent.py [--layers blocks.2.1.conv_pwl,blocks.4.0.conv_pwl] [--units 12]
                                        [--steps 64] [--size 64] [--threads 2]

On offline EfficientNet-Lite0 (ImageNet weights), for the first ``--units`` channels of each layer, one image that
drives the channel up, made by Lucent (torch-lucent 0.1.8: ``render_vis`` with ``param.image`` — Fourier
parameterisation, decorrelated colours — its standard transforms, the model's input normalisation, fixed image
size, Adam at 0.05, the channel objective: the spatial mean) and by ``unitlens.featviz.visualize`` with the same
recipe, size and steps. Both images are measured the same way: 8 bits per channel, untransformed, the channel's
spatial mean (the record pass's reduction). Prints every unit, the ratio of the mean activations per layer and
overall (the target is >= 0.9), and the share of units where ours reaches at least 0.9x Lucent's.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from featviz_speed import lite0, lucent_render  # benchmarks/ (the script's own folder) is on the path
from unitlens.featviz import visualize
from unitlens.runtime import capture_outputs


def activation(model, images: torch.Tensor, layer: str, unit: int, mean, std) -> float:
    """The channel's spatial mean on (1, 3, S, S) images in [0, 1], quantised to 8 bits first."""
    x = (images * 255).round() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = capture_outputs(model, x, [layer])[layer]
    return float(out[:, unit].mean())


def lucent_image(model, layer: str, unit: int, steps: int, size: int, mean, std, seed: int) -> torch.Tensor:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return lucent_render(model, f"{layer.replace('.', '_')}:{unit}", steps, size, 1, mean, std)


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="blocks.2.1.conv_pwl,blocks.4.0.conv_pwl")
    ap.add_argument("--units", type=int, default=12)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, mean, std = lite0()
    rows = []
    for layer in args.layers.split(","):
        ours = visualize(model, units=range(args.units), layers=[layer], steps=args.steps, size=args.size,
                         per_side=1, mean=mean, std=std, device="cpu", progress=False)
        for unit in range(args.units):
            theirs = lucent_image(model, layer, unit, args.steps, args.size, mean, std, seed=unit)
            up = (ours.table["unit"] == unit) & (ours.table["direction"] == "top")
            mine = ours.images[int(np.flatnonzero(up.to_numpy())[0])]
            rows.append({"layer": layer, "unit": unit,
                         "lucent": activation(model, theirs, layer, unit, mean, std),
                         "unitlens": activation(model, mine[None].float() / 255, layer, unit, mean, std)})
    table = pd.DataFrame(rows)
    table["ratio"] = table["unitlens"] / table["lucent"]
    pd.set_option("display.width", 120)
    print(f"EfficientNet-Lite0, {args.units} units of each layer, one image up each, {args.steps} steps, "
          f"{args.size} px, Fourier + decorrelated colours, Lucent's standard transforms, Adam 0.05")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for layer, g in table.groupby("layer", sort=False):
        print(f"{layer}: mean activation unitlens {g['unitlens'].mean():.3f}, lucent {g['lucent'].mean():.3f}, "
              f"ratio {g['unitlens'].mean() / g['lucent'].mean():.3f}")
    overall = table["unitlens"].mean() / table["lucent"].mean()
    share = float((table["unitlens"] >= 0.9 * table["lucent"]).mean())
    print(f"all {len(table)} units: ratio of mean activations {overall:.3f} (target >= 0.9); ours >= 0.9x lucent "
          f"on {share:.0%} of units")
    return table


if __name__ == "__main__":
    main()
