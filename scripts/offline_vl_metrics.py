"""Held-out figures of an image–text space on openclipart images (shared by the offline-vl train and eval scripts).

Definitions (printed by ``scripts/eval_offline_vl.py`` and recorded in the projection's manifest):

- **top-category zero-shot accuracy**: every *path* of an image of the split is one example (an image filed under
  two categories counts once under each, so at most one of the two can be right); its class is the top-level
  folder. Each of the 22 categories is a text probe (the 4 templates of ``unitlens.lens.probes.TEMPLATES`` on the
  readable name, ``signs_and_symbols`` -> ``signs and symbols``, normalised embeddings averaged); the prediction is
  the probe with the highest cosine to the image's embedding. Chance is 1/22 = 4.5 % for a uniform guess.
- **sub-category zero-shot accuracy**: the same over paths that have a first-level sub-folder; the classes are all
  first-level sub-folder names of the package, made readable, same names merged (``astronomy`` is one class).
- **text->image recall@k**: the queries are the distinct captions of the split's paths (the caption text itself,
  no template); the gallery is the split's distinct images; a query is a hit at k when one of its k most similar
  images carries that caption (on any of its paths). Recall@k is the fraction of queries with a hit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from offline_vl_data import ClipArt, readable

TOPK = (1, 5)


@dataclass
class Examples:
    """One split, laid out for scoring: its distinct images (gallery), paths and captions."""

    shas: list[str]  # gallery order
    path_image: torch.Tensor  # (P,) gallery row of every path
    path_top: list[str]  # top category of every path
    path_sub: list[str]  # readable first-level sub-folder of every path ('' when none)
    captions: list[str]  # distinct captions (queries)
    caption_images: list[list[int]]  # gallery rows that carry each caption

    @classmethod
    def of(cls, images: list[ClipArt], split: str, available: set[str]) -> "Examples":
        chosen = [im for im in images if im.split == split and im.sha1 in available]
        rows, tops, subs, by_caption = [], [], [], {}
        for row, im in enumerate(chosen):
            for path, cap in zip(im.paths, im.captions):
                parts = path.split("/")
                rows.append(row)
                tops.append(parts[0])
                subs.append(readable(parts[1]) if len(parts) > 2 else "")
                carriers = by_caption.setdefault(cap, [])
                if row not in carriers:
                    carriers.append(row)
        caps = sorted(by_caption)
        return cls([im.sha1 for im in chosen], torch.tensor(rows, dtype=torch.int64), tops, subs, caps,
                   [by_caption[c] for c in caps])


def class_names(images: list[ClipArt]) -> tuple[list[str], list[str]]:
    """The 22 top categories (folder names) and the readable first-level sub-folder names of the whole package."""
    tops = sorted({p.split("/")[0] for im in images for p in im.paths})
    subs = sorted({readable(p.split("/")[1]) for im in images for p in im.paths if len(p.split("/")) > 2})
    return tops, subs


def zero_shot(z: torch.Tensor, ex: Examples, labels: list[str], classes: list[str], probes: torch.Tensor) -> float:
    """Accuracy over the paths whose label is not '' (argmax of cosine to the class probes)."""
    keep = [i for i, lab in enumerate(labels) if lab]
    if not keep:
        return float("nan")
    pred = (F.normalize(z, dim=-1) @ F.normalize(probes, dim=-1).T).argmax(1)
    index = {c: k for k, c in enumerate(classes)}
    truth = torch.tensor([index[labels[i]] for i in keep])
    return float((pred[ex.path_image[keep]] == truth).float().mean())


def recall(z: torch.Tensor, ex: Examples, caption_vectors: torch.Tensor, ks=TOPK) -> dict[int, float]:
    """Text->image recall@k over the split's distinct captions (see the module doc)."""
    sims = F.normalize(caption_vectors, dim=-1) @ F.normalize(z, dim=-1).T
    top = sims.topk(min(max(ks), sims.shape[1]), dim=1).indices
    positive = torch.zeros_like(sims, dtype=torch.bool)
    for q, rows in enumerate(ex.caption_images):
        positive[q, rows] = True
    hits = positive.gather(1, top)
    return {k: float(hits[:, :k].any(1).float().mean()) for k in ks}


def figures(z: torch.Tensor, ex: Examples, tops: list[str], top_probes: torch.Tensor, subs: list[str],
            sub_probes: torch.Tensor, caption_vectors: torch.Tensor) -> dict[str, float]:
    """All figures of one embedding of a split's images: top/sub zero-shot accuracy, recall@1/@5."""
    r = recall(z, ex, caption_vectors)
    return {"top_category_acc": zero_shot(z, ex, ex.path_top, tops, top_probes),
            "sub_category_acc": zero_shot(z, ex, ex.path_sub, subs, sub_probes),
            **{f"recall@{k}": v for k, v in r.items()}}
