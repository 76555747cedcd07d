"""The README's basis study: SAE, PCA and random bases of recorded layers, recorded, scored and compared.

    python scripts/basis_study.py ATLAS --layers blocks.5.0.conv_pwl,blocks.6.0.conv_pwl \\
        --configs sae-x8,pca,random [--steps fit,record,mis,lens,compare] [--threads 1] [--device cuda]

Config names: ``sae-x<E>[-k<K>][-s<S>]`` (a TopK SAE with expansion E, k = K (32), seed S (0); spatial positions,
the CLI defaults otherwise), ``pca``, ``ica``, ``random[-s<S>]``; each becomes the basis of that name per layer.
Every step skips what is done: ``fit`` reads each layer's activations once for all its new configs
(``unitlens.basis.read_samples``), ``record`` records all unrecorded bases in one pass, ``mis`` scores every
layer with the offline backend, ``lens`` embeds, measures and labels them with ``offline-vl`` and the 22 demo
categories as text concepts, ``compare`` prints and writes (``ATLAS/basis/compare-<layer>.csv/.png``) the
comparison of each layer. The same as the CLI's ``basis fit`` / ``basis record`` / ``mis`` / ``lens`` / ``basis
compare``, without streaming the model again for every basis.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import torch

from unitlens.atlas import Atlas
from unitlens.atlas.files import safe_name, write_parquet
from unitlens.basis import (
    BasisOptions,
    compare_bases,
    fit_basis,
    list_bases,
    plot_basis_comparison,
    read_samples,
    record_bases,
)
from unitlens.data.datasets import DEMO_ROOT

STEPS = ("fit", "record", "mis", "lens", "compare")


def options_of(config: str, device: str | None) -> BasisOptions:
    """A config name as fit options (see the module docstring)."""
    m = re.fullmatch(r"sae-x(\d+(?:\.\d+)?)(?:-k(\d+))?(?:-s(\d+))?", config)
    if m:
        return BasisOptions(kind="sae-topk", expansion=float(m[1]), k=int(m[2] or 32), seed=int(m[3] or 0),
                            device=device)
    m = re.fullmatch(r"random(?:-s(\d+))?", config)
    if m:
        return BasisOptions(kind="random", seed=int(m[1] or 0), device=device)
    if config in ("pca", "ica"):
        return BasisOptions(kind=config, device=device)
    raise SystemExit(f"unknown config {config!r}")


def fit_step(atlas: Atlas, layers: list[str], configs: list[str], device: str | None) -> None:
    have = set(list_bases(atlas))
    for layer in layers:
        todo = [c for c in configs if f"{layer}::{c}" not in have]
        if not todo:
            continue
        t = time.perf_counter()
        samples = read_samples(atlas, layer, positions="spatial", device=device)
        print(f"{layer}: {samples.n} samples read in {time.perf_counter() - t:.0f} s", flush=True)
        for config in todo:
            res = fit_basis(atlas, layer, config, options_of(config, device), samples=samples)
            m = res.metrics
            print(f"  {config}: {m['features']} features, r2 {m['r2']:.3f}, dead {m['dead_features']}, "
                  f"mean active {m['mean_active']:.1f}, {res.seconds:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("atlas", type=Path)
    parser.add_argument("--layers", required=True)
    parser.add_argument("--configs", default="sae-x8,pca,random")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 helps on a loaded machine)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    atlas = Atlas(args.atlas)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    configs = [s.strip() for s in args.configs.split(",") if s.strip()]
    steps = set(args.steps.split(","))
    if "fit" in steps:
        fit_step(atlas, layers, configs, args.device)
    if "record" in steps:
        todo = [n for n in list_bases(atlas) if n not in Atlas(args.atlas).derived_layers]
        if todo:
            res = record_bases(atlas, todo, device=args.device)
            print(f"recorded {len(res.layers)} basis layers in {res.seconds:.0f} s", flush=True)
    atlas = Atlas(args.atlas)
    if "mis" in steps:
        from unitlens.mis import score_mis

        run = score_mis(atlas, backend="offline", device=args.device, progress=True)
        print(f"MIS: {run.counts}", flush=True)
    if "lens" in steps:
        from unitlens.lens import embed_units, label, measures

        embed_units(atlas, "offline-vl", device=args.device)
        measures(atlas, "offline-vl")
        concepts = [p.name.replace("_", " ") for p in sorted((DEMO_ROOT / "images").iterdir()) if p.is_dir()]
        label(atlas, concepts, backend="offline-vl")
    if "compare" in steps:
        for layer in layers:
            res = compare_bases(atlas, layer, backend="offline", lens_backend="offline-vl")
            stem = f"compare-{safe_name(layer)}"
            write_parquet(atlas.derived_path("basis", f"{stem}.parquet"), res.table)
            res.table.to_csv(atlas.derived_path("basis", f"{stem}.csv"), index=False)
            plot_basis_comparison(res, atlas.derived_path("basis", f"{stem}.png"), title=layer)
            with_cols = ["basis", "units", "constant", "sparse", "mis_mean", "mis_mean_nonsparse", "above_chance",
                         "p_vs_channels", "clarity", "clarity_nonsparse", "polysemanticity_nonsparse",
                         "label_share", "label_share_nonsparse", "r2", "dead_features"]
            print(res.table[with_cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)
            for text in res.notes:
                print("note:", text)


if __name__ == "__main__":
    main()
