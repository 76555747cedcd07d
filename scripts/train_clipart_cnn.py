"""Train a small CNN on Debian's openclipart-png categories, CPU-only and deterministic, for checkpoint studies.

What it does (run from the repository root)::

    python scripts/train_clipart_cnn.py --out runs/clipart/base [--epochs 8] [--dropout 0.5] [--l1 0.1]

Data
    The same images, renderings and split as the offline-vl projection (``scripts/offline_vl_data.py``): every
    distinct PNG of ``openclipart-png`` rendered on white at 160 px, split by image and stratified by top-level
    category with ``assign_split`` (seed 0), the bundled demo images held out first (most of them land in the test
    split). The classes are the 22 top-level categories. Training uses the train split, the sidecars report top-1
    accuracy on the held-out test split, measured with the preprocessing the study records with.

Model
    ``timm:<arch>?num_classes=22&input_size=<size>`` (default ``resnet10t`` at 64 px), built by
    ``unitlens.zoo.load_model`` with its seeded random init, so ``epoch_00.pt`` is exactly the architecture a study
    loads with ``--random`` and every checkpoint loads with ``--model NAME --checkpoint FILE``. Preprocessing at
    evaluation is the model's own (resize to size / 0.875, centre crop); training crops the same resized image at
    random offsets and flips it.

Regularisers (the SemanticLens paper, supplementary G.2)
    ``--dropout p``: dropout on the pooled penultimate features (timm's ``drop_rate``; only active in training).
    ``--l1 lambda``: activation sparsity, ``lambda * sum_i |z_i| / k+`` on the penultimate features z (k+ = the
    number of non-zero activations of the sample), added to the cross-entropy.

Output (``--out``)
    ``epoch_00.pt`` (initialisation) ... ``epoch_NN.pt``: state dicts; ``epoch_NN.json``: the sidecar the study
    reads (epoch, accuracy = held-out top-1, validation accuracy, training loss, model name); ``run.json``: the
    arguments, data version, split digests, per-epoch metrics and timings.

Determinism
    Seeded initialisation, shuffles and augmentation (one ``torch.Generator``), ``torch.use_deterministic_algorithms``,
    data held in memory and loaded in the main process, a fixed number of torch threads (``--threads``). Two runs
    with the same arguments and thread count write identical checkpoints.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import offline_vl_data as data  # noqa: E402  (scripts/ is not a package)

SPLIT_SEED = 0  # the offline-vl split: demo images held out the same way
CROP_PCT = 0.875  # timm's default centre-crop fraction (resize to size / 0.875, crop size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data.add_source_arguments(ap)
    ap.add_argument("--out", type=Path, default=Path("runs/clipart/base"), help="folder for checkpoints")
    ap.add_argument("--arch", default="resnet10t", help="timm architecture")
    ap.add_argument("--size", type=int, default=64, help="input side in pixels")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate (cosine schedule, 1 epoch warm-up)")
    ap.add_argument("--weight-decay", type=float, default=5e-5)
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout on the penultimate features")
    ap.add_argument("--l1", type=float, default=0.0, help="strength of the L1 activation-sparsity loss")
    ap.add_argument("--seed", type=int, default=0, help="initialisation, shuffling and augmentation seed")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (part of what makes a run repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="rendering processes (do not change the output)")
    ap.add_argument("--max-train", type=int, default=None, help="use only this many training images (quick checks)")
    return ap.parse_args(argv)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=False)


def load_split(images, split: str, categories: list[str], folder: Path, transform) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) tensors of the images of a split through ``transform`` and their category indices."""
    chosen = [im for im in images if im.split == split and (folder / f"{im.sha1}.jpg").is_file()]
    xs = [transform(Image.open(folder / f"{im.sha1}.jpg").convert("RGB")) for im in chosen]
    ys = [categories.index(data.category(im)) for im in chosen]
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def resized_uint8(side: int):
    """The training images: resized like the eval transform (shorter side ``side``, bicubic), kept as uint8."""
    def load(image: Image.Image) -> torch.Tensor:
        w, h = image.size
        scale = side / min(w, h)
        image = image.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return load


def augment(batch: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor,
            gen: torch.Generator) -> torch.Tensor:
    """Random ``size`` crops at seeded offsets and seeded horizontal flips of uint8 images, then normalised."""
    n, _, h, w = batch.shape
    ys = torch.randint(0, h - size + 1, (n,), generator=gen)
    xs = torch.randint(0, w - size + 1, (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    crops = torch.stack([batch[i, :, y:y + size, x:x + size] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])
    crops = torch.where(flips[:, None, None, None], crops.flip(-1), crops)
    return (crops.float() / 255 - mean) / std


def sparsity_loss(features: torch.Tensor) -> torch.Tensor:
    """The SemanticLens paper's eq. (4): sum_i |z_i| / k+ per sample (k+ = non-zero activations), batch mean."""
    k_plus = (features != 0).sum(1).clamp_min(1)
    return (features.abs().sum(1) / k_plus).mean()


@torch.no_grad()
def top1(model, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    hits = sum(int((model(x[s:s + batch]).argmax(1) == y[s:s + batch]).sum()) for s in range(0, len(x), batch))
    return hits / max(len(y), 1)


def save_checkpoint(out: Path, epoch: int, model, sidecar: dict) -> str:
    """``epoch_NN.pt`` (state dict) and its ``epoch_NN.json`` sidecar; returns the checkpoint's SHA-256 prefix."""
    from unitlens.atlas.files import atomic_write, write_json

    path = out / f"epoch_{epoch:02d}.pt"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()[:16]
    write_json(out / f"epoch_{epoch:02d}.json", {**sidecar, "epoch": epoch, "weights_sha256": digest})
    return digest


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    from unitlens.zoo import load_model

    source = data.locate_source(args.source, args.deb, args.cache)
    images, _ = data.scan(source, SPLIT_SEED)
    categories = sorted({data.category(im) for im in images})
    with _progress() as bar:
        failed = data.render_all(source, images, args.cache, args.jobs, bar)
    folder = data.render_dir(args.cache)
    t_data = time.perf_counter()

    name = f"timm:{args.arch}?num_classes={len(categories)}&input_size={args.size}"
    loaded = load_model(name, pretrained=False)  # seeded init: epoch 0 is what a study loads with --random
    model = loaded.model
    if args.dropout:
        if not hasattr(model, "drop_rate"):
            sys.exit(f"error: timm:{args.arch} has no drop_rate attribute; --dropout needs one")
        model.drop_rate = args.dropout
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
    x_test, y_test = load_split(images, "test", categories, folder, loaded.transform)
    x_val, y_val = load_split(images, "validation", categories, folder, loaded.transform)
    x_train, y_train = load_split(images, "train", categories, folder, resized_uint8(round(args.size / CROP_PCT)))
    if args.max_train:
        x_train, y_train = x_train[:args.max_train], y_train[:args.max_train]
    t_load = time.perf_counter()
    print(f"{len(categories)} classes; train {len(y_train)}, validation {len(y_val)}, test {len(y_test)} images "
          f"({len(failed)} unreadable); data {t_data - t_start:.0f} s, tensors {t_load - t_data:.0f} s", flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    steps_per_epoch = (len(y_train) + args.batch_size - 1) // args.batch_size
    total = steps_per_epoch * args.epochs

    def lr_at(step: int) -> float:
        if step < steps_per_epoch:
            return args.lr * (step + 1) / steps_per_epoch
        return 0.5 * args.lr * (1 + np.cos(np.pi * (step - steps_per_epoch) / max(1, total - steps_per_epoch)))

    args.out.mkdir(parents=True, exist_ok=True)
    common = {"model": name, "accuracy_split": "test", "n_test": len(y_test), "dropout": args.dropout, "l1": args.l1,
              "seed": args.seed}
    history = []
    acc, val = top1(model, x_test, y_test), top1(model, x_val, y_val)
    digest = save_checkpoint(args.out, 0, model, {**common, "accuracy": acc, "validation_accuracy": val,
                                                  "train_loss": None})
    history.append({"epoch": 0, "accuracy": acc, "validation_accuracy": val, "train_loss": None, "seconds": 0.0,
                    "weights_sha256": digest})
    print(f"epoch 0: test top-1 {acc:.3f}, validation {val:.3f}", flush=True)
    step = 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=gen)
        losses = []
        for s in range(0, len(order), args.batch_size):
            idx = order[s:s + args.batch_size]
            x = augment(x_train[idx], args.size, mean, std, gen)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            features = model.forward_head(model.forward_features(x), pre_logits=True)
            logits = model.get_classifier()(features)
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=0.1)
            if args.l1:
                loss = loss + args.l1 * sparsity_loss(features)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        seconds = time.perf_counter() - t0
        acc, val = top1(model, x_test, y_test), top1(model, x_val, y_val)
        train_loss = float(np.mean(losses))
        digest = save_checkpoint(args.out, epoch, model, {**common, "accuracy": acc, "validation_accuracy": val,
                                                          "train_loss": train_loss})
        history.append({"epoch": epoch, "accuracy": acc, "validation_accuracy": val, "train_loss": train_loss,
                        "seconds": round(seconds, 1), "weights_sha256": digest})
        print(f"epoch {epoch}: loss {train_loss:.3f}, test top-1 {acc:.3f}, validation {val:.3f} ({seconds:.0f} s)",
              flush=True)

    from unitlens.atlas.files import write_json

    write_json(args.out / "run.json", {
        "model": name, "categories": categories, "data": {"package": source.version, "origin": source.origin,
                                                          "unreadable": len(failed)},
        "split": {"seed": SPLIT_SEED, "digests": data.split_digest(images),
                  "counts": {"train": len(y_train), "validation": len(y_val), "test": len(y_test)}},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("source", "deb")},
        "epochs": history, "threads": args.threads, "seconds": round(time.perf_counter() - t_start, 1),
        "command": "python scripts/train_clipart_cnn.py " + " ".join(sys.argv[1:] if argv is None else argv),
    })
    print(f"done in {time.perf_counter() - t_start:.0f} s -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
