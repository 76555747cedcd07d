#!/usr/bin/env python3
"""Held-out figures of the shipped ``offline-vl`` projection against random projections of the same shape.

What
    On the test images of the split the projection was trained with (about 10 % of every category, most of them
    bundled demo images; never seen in training or model selection, see ``offline_vl_data``), prints zero-shot
    accuracy over the 22 top categories and over the sub-categories (the 4 prompt templates of
``unitlens.lens.probes.TEMPLATES``) and text->image
    recall@1/@5, for the trained projection and for ``--random-seeds`` seeded random projections (the floor; seed 0
    is the ``offline-vl+random`` backend). The definitions are printed with the numbers (see
    ``offline_vl_metrics``). A per-category table and the demo / non-demo parts of the test split follow.

Why
    The backend is only worth shipping if its space carries meaning the random floor does not; these are the
    numbers the README quotes.

How
    The split is rebuilt from the package and the manifest's seed and must match the manifest's digests. Image
    embeddings are the shipped projection applied to the cached Lite2 features of the renderings (the script first
    checks, on a few test images, that this equals ``backend.encode_images`` on the rendered files).

Usage (from the repository root; ~1 minute with the training cache, else it renders and embeds the test images)
    python scripts/eval_offline_vl.py [--source DIR | --deb FILE] [--cache DIR] [--weights DIR] [--random-seeds 10]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import offline_vl_data as data  # noqa: E402
import offline_vl_metrics as metrics  # noqa: E402
from unitlens.backends.offline_vl_backend import WEIGHTS_DIR, OfflineVLBackend, ProjectionHead  # noqa: E402
from unitlens.runtime import seeded  # noqa: E402

CHANCE_NOTE = "chance of a uniform guess: top 1/22 = 4.5 %"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Test-set figures of the offline-vl projection vs random projections.")
    data.add_source_arguments(ap)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="folder with projection + manifest")
    ap.add_argument("--random-seeds", type=int, default=10, help="random projections averaged for the floor")
    ap.add_argument("--jobs", type=int, default=2, help="rendering processes")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    from rich.progress import Progress

    from unitlens.lens.probes import text_probes

    args = parse_args(argv)
    torch.set_num_threads(2)
    backend = OfflineVLBackend(device="cpu", weights_dir=args.weights)
    manifest = backend.manifest
    source = data.locate_source(args.source, args.deb, args.cache)
    if source.version != manifest["data"]["version"]:
        sys.exit(f"error: the projection was trained on openclipart-png {manifest['data']['version']}, this is "
                 f"{source.version}")
    images, _ = data.scan(source, manifest["split"]["seed"])
    if data.split_digest(images) != manifest["split"]["sha256"]:
        sys.exit("error: this split differs from the one the projection was trained with (manifest split.sha256); "
                 "same package version, seed and bundled demo set are needed")
    test_images = [im for im in images if im.split == "test"]
    with Progress(transient=True) as bar:
        data.render_all(source, test_images, args.cache, args.jobs, bar)
        feats = data.image_features(test_images, args.cache, backend, bar)
    ex = metrics.Examples.of(images, "test", set(feats))
    x = torch.stack([feats[s] for s in ex.shas])
    with Progress(transient=True) as bar:
        captions = data.text_embeddings(ex.captions, args.cache, backend, bar)
    tops, subs = metrics.class_names(images)
    probes = {name: torch.stack([p.vector for p in text_probes(backend, [data.readable(c) for c in classes],
                                                               null="none")])
              for name, classes in (("top", tops), ("sub", subs))}
    sha = manifest["projection"]["sha256"]
    print(f"offline-vl projection {manifest['projection']['config']} (SHA-256 {sha[:12]}…), openclipart-png "
          f"{source.version}, split seed {manifest['split']['seed']}")
    print(f"test split: {len(ex.shas)} images ({sum(im.demo for im in test_images)} of them the bundled demo set), "
          f"{len(ex.path_top)} paths, {len(ex.captions)} distinct captions; {len(tops)} top categories, "
          f"{len(subs)} sub-categories")
    print(f"check: encode_images on rendered files vs projection of cached features, max |diff| "
          f"{_check(backend, ex, x, args.cache):.2e}")

    def score(z):
        return metrics.figures(z, ex, tops, probes["top"], subs, probes["sub"], captions)

    trained = score(backend.project(x))
    floors = pd.DataFrame([score(_random_projection(manifest, seed, x)) for seed in range(args.random_seeds)])
    rows = []
    for fig, value in trained.items():
        mean, sd = floors[fig].mean(), floors[fig].std(ddof=0)
        rows.append({"figure": fig, "offline-vl": round(100 * value, 1),
                     f"random (mean of {args.random_seeds})": round(100 * mean, 1), "random sd": round(100 * sd, 1),
                     "random max": round(100 * floors[fig].max(), 1), "ratio": round(value / mean, 1)})
    _table(pd.DataFrame(rows), "test split, % (ratio = offline-vl / random mean)")
    print(_definitions(len(tops), len(subs)))
    _breakdowns(backend.project(x), ex, tops, probes, subs, captions, images)


def _table(frame: pd.DataFrame, title: str) -> None:
    print(f"\n{title}\n{frame.to_string(index=False)}")


def _random_projection(manifest: dict, seed: int, x: torch.Tensor) -> torch.Tensor:
    """A seeded random head of the shipped shape (seed 0 = the ``offline-vl+random`` backend's)."""
    with seeded(seed):
        head = ProjectionHead(**manifest["projection"]["config"])
    with torch.no_grad():
        return F.normalize(head(x), dim=-1)


def _check(backend, ex, x, cache, n: int = 8) -> float:
    from unitlens.backends import embed_images
    from unitlens.data.images import open_rgb

    folder = data.render_dir(cache)
    rows = list(range(0, len(ex.shas), max(1, len(ex.shas) // n)))[:n]
    direct = embed_images(backend, [open_rgb(folder / f"{ex.shas[r]}.jpg") for r in rows])
    return float((direct - backend.project(x[rows])).abs().max())


def _definitions(n_top: int, n_sub: int) -> str:
    return (f"definitions: top/sub-category accuracy = every test path is one example, class = its top folder "
            f"({n_top} classes) / its first sub-folder made readable ({n_sub} classes, same names merged), "
            "prediction = the class whose prompt (4 templates averaged) has the highest cosine to the image; "
            "recall@k = queries are the distinct captions of the test paths, gallery = the distinct test images, "
            "a hit when one of the k most similar images carries the caption. " + CHANCE_NOTE)


def _breakdowns(z, ex, tops, probes, subs, captions, images) -> None:
    """Per-category top accuracy, and the figures on the demo and the non-demo part of the test split."""
    pred = (z @ F.normalize(probes["top"], dim=-1).T).argmax(1)
    per = pd.DataFrame({"category": ex.path_top, "correct": [tops[int(pred[r])] == c for r, c in
                                                             zip(ex.path_image.tolist(), ex.path_top)]})
    table = per.groupby("category")["correct"].agg(["size", "mean"]).reset_index()
    table = table.rename(columns={"size": "test paths", "mean": "accuracy %"})
    table["accuracy %"] = (100 * table["accuracy %"]).round(1)
    train_counts = pd.Series([p.split("/")[0] for im in images if im.split == "train" for p in im.paths])
    table["train paths"] = table["category"].map(train_counts.value_counts()).fillna(0).astype(int)
    _table(table, "top-category zero-shot accuracy per category (test paths)")
    print(f"mean of the per-category accuracies (each category weighs the same): {table['accuracy %'].mean():.1f} %")
    demo = {im.sha1 for im in images if im.demo}
    rows = []
    for part, keep in (("demo images", True), ("other test images", False)):
        sub_images = [im for im in images if im.split == "test" and (im.sha1 in demo) == keep]
        sub_ex = metrics.Examples.of(sub_images, "test", set(ex.shas))
        idx = torch.tensor([ex.shas.index(s) for s in sub_ex.shas])
        vec = dict(zip(ex.captions, captions))
        caps = torch.stack([vec[c] for c in sub_ex.captions])
        figs = metrics.figures(z[idx], sub_ex, tops, probes["top"], subs, probes["sub"], caps)
        rows.append({"part": part, "images": len(sub_ex.shas), **{k: round(100 * v, 1) for k, v in figs.items()}})
    _table(pd.DataFrame(rows), "offline-vl on the two parts of the test split, % (recall within the part)")


if __name__ == "__main__":
    main()
