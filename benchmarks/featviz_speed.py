"""Feature visualisation speed: units per second, ours (many units per batch, forward stopped at the layer)
against Lucent's per-unit ``render_vis`` loop at equal settings, in one run.

    python benchmarks/featviz_speed.py [--layer blocks.3.0.conv_pwl] [--units 8] [--steps 16] [--size 128]
                                       [--per-side 1] [--repeats 3] [--threads 2]

On offline EfficientNet-Lite0 (ImageNet weights), both make, for each of ``--units`` units of ``--layer``,
``--per-side`` images that drive the unit up and as many that drive it down, from noise, with the same recipe:
Fourier parameterisation with decorrelated colours, Lucent's standard transforms (pad 12, jitter 8, scale
0.9-1.1, rotate -10..10 degrees, jitter 4) and the model's input normalisation, fixed image size, Adam at 0.05,
``--steps`` steps. Lucent (torch-lucent 0.1.8) runs ``render_vis`` twice per unit (the channel objective and its
negative), each on a batch of ``--per-side`` images; ours runs ``unitlens.featviz.visualize`` once for all units.
Ours and Lucent alternate ``--repeats`` times, so a shared machine's load hits both alike; the ratio of each pair is
printed and their median as "N.Nx faster than lucent".
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from unitlens.featviz import visualize
from unitlens.featviz.normalization import input_normalization
from unitlens.zoo import load_model


def lite0():
    """Offline EfficientNet-Lite0 in eval mode and its input normalisation (mean, std)."""
    loaded = load_model("efficientnet_lite0")
    return loaded.model.eval(), *input_normalization(loaded.transform)


def lucent_render(model, objective, steps: int, size: int, per_side: int, mean, std) -> torch.Tensor:
    """Lucent's ``render_vis`` at our settings: ``per_side`` Fourier images with decorrelated colours, its standard
    transforms, then the model's normalisation, fixed size, Adam at 0.05; the (n, 3, S, S) images in [0, 1]."""
    from lucent.optvis import param, render, transform

    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = render.render_vis(model, objective, lambda: param.image(size, batch=per_side),
                                   transforms=transform.standard_transforms + [lambda x: (x - m) / s],
                                   preprocess=False, thresholds=(steps,), show_image=False, progress=False,
                                   fixed_image_size=size)
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2)


def lucent_units(model, layer: str, units: list[int], steps: int, size: int, per_side: int, mean, std) -> float:
    """Seconds of Lucent's loop: per unit and direction one render_vis of ``per_side`` images."""
    from lucent.optvis import objectives

    t = time.perf_counter()
    for unit in units:
        for sign in (1, -1):
            lucent_render(model, objectives.channel(layer.replace(".", "_"), unit) * sign, steps, size, per_side,
                          mean, std)
    return time.perf_counter() - t


def ours_units(model, layer: str, units: list[int], steps: int, size: int, per_side: int, mean, std) -> float:
    t = time.perf_counter()
    visualize(model, units=units, layers=[layer], steps=steps, size=size, per_side=per_side, mean=mean, std=std,
              batch_size=2 * per_side * len(units), device="cpu", progress=False)
    return time.perf_counter() - t


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks.3.0.conv_pwl", help="a mid-depth layer (stage 4 of 7)")
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--per-side", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, mean, std = lite0()
    units = list(range(args.units))
    np.random.seed(0)
    torch.manual_seed(0)
    settings = (model, args.layer, units, args.steps, args.size, args.per_side, mean, std)
    ours_units(model, args.layer, units[:1], 2, args.size, args.per_side, mean, std)  # warm-up of both
    lucent_units(model, args.layer, units[:1], 2, args.size, args.per_side, mean, std)
    print(f"EfficientNet-Lite0 {args.layer}: {args.units} units, {args.per_side} image(s) up and down each, "
          f"{args.steps} steps, {args.size} px, {args.threads} torch threads, CPU", flush=True)
    print(f"{'repeat':>6} {'ours units/s':>13} {'lucent units/s':>15} {'ratio':>7}", flush=True)
    ratios = []
    for r in range(args.repeats):
        ours = ours_units(*settings)
        lucent = lucent_units(*settings)
        ratios.append(lucent / ours)
        print(f"{r:>6} {args.units / ours:>13.3f} {args.units / lucent:>15.3f} {lucent / ours:>7.2f}", flush=True)
    median = statistics.median(ratios)
    print(f"{median:.1f}x faster than lucent")
    return median


if __name__ == "__main__":
    main()
