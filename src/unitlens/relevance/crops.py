"""Relevance crops of concept examples (crop mode ``relevance``) and the masked rendering of supplementary H.1.

For unit k and one of its concept examples x, the CRP heatmap of k alone is computed: relevance starts at k's
layer as k's activation at its most activated position (zero elsewhere) and is propagated to the input with the
ε z⁺ ♭ composite (``attribute.unit_heatmaps``). The heatmap is smoothed with a Gaussian blur (kernel 51 px at a
224 px input, scaled with the input size), and the example is cropped to the bounding box of the pixels at
≥ 1 % of its maximum (paper section 3.1; ``threshold``), mapped back to original-image pixels like activation
crops. A heatmap with no positive value, or a box that covers the whole image, keeps the whole image.

Many (unit, example) pairs share one backward: each batch element carries its own unit, and the forward pass
stops at the unit's layer, so a layer of U units x m examples costs about U·m / batch_size backward passes through
the part of the network below it.

Models without LRP support (ViTs, see ``composite.py``) fall back to activation-map crops with a note, as the
paper does.

``masked_example`` renders an example for display: pixels below 2 % of the heatmap's maximum are darkened by a
black mask of opacity 0.4 (supplementary H.1); ``relevance_card`` draws a unit card of such examples.
"""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import torch

from unitlens.data.geometry import input_geometry
from unitlens.data.loading import load_batches
from unitlens.errors import RelevanceUnavailable
from unitlens.lens.crops import (
    CropContext,
    boxes_from_maps,
    crop_examples,
    example_pairs,
    register_crop_mode,
)
from unitlens.lens.examples import ConceptExamples, select_examples
from unitlens.report.lens_plots import plot_unit_card
from unitlens.runtime import Progress, pick_device, prefetch_chunks, prepare_model

BLUR_FRACTION = 51 / 224  # Gaussian blur kernel of the paper (51 px at 224 px inputs), as a fraction of the side
MASK_THRESHOLD = 0.02  # display mask: pixels below 2 % of the maximum (supplementary H.1)
MASK_OPACITY = 0.4


def blur_kernel(input_hw: tuple[int, int]) -> int:
    """Odd Gaussian kernel size for an input of ``input_hw`` (51 at 224 px; 1, i.e. no blur, for tiny inputs)."""
    k = int(round(BLUR_FRACTION * min(input_hw)))
    k = k if k % 2 == 1 else k + 1
    return max(1, min(k, 2 * (min(input_hw) // 2) - 1))


def smooth(heatmaps: torch.Tensor) -> torch.Tensor:
    """(P, H, W) heatmaps blurred with the scaled paper kernel."""
    from torchvision.transforms.functional import gaussian_blur

    k = blur_kernel((int(heatmaps.shape[-2]), int(heatmaps.shape[-1])))
    if k <= 1:
        return heatmaps
    return gaussian_blur(heatmaps[:, None].float(), kernel_size=[k, k])[:, 0]


def relevance_boxes(model, composite, dataset, requests: dict, threshold: float = 0.01, batch_size: int = 32,
                    device=None, progress: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Relevance crop boxes for concept examples of several layers.

    ``requests`` maps a layer name to ``(LayerInfo, ConceptExamples)``. Returns per layer ``(boxes (U, m, 4),
    has_box (U, m))`` in original-image pixels (a whole-image box is returned as no box).
    """
    from crp.attribution import CondAttribution

    from unitlens.relevance.attribute import unit_heatmaps

    dev = pick_device(device)
    net = prepare_model(model.model, dev)
    attribution = CondAttribution(net, device=dev)
    out = {}
    total = sum(int(ex.mask.sum()) for _, ex in requests.values())
    with Progress("relevance crops", total, progress, unit="crop") as bar:
        for name, (info, ex) in requests.items():
            U, m = ex.ids.shape
            boxes = torch.zeros(U, m, 4, dtype=torch.int64)
            has = torch.zeros(U, m, dtype=torch.bool)
            img, unit, flat = example_pairs(ex)
            chunks = [(s, min(s + batch_size, len(img))) for s in range(0, len(img), batch_size)]
            for (s, e), (ids, x, sizes) in zip(chunks, _chunk_images(dataset, model.transform, img, chunks, dev)):
                if not ids:
                    bar.advance(e - s)
                    continue
                slot = {i: b for b, i in enumerate(ids)}
                in_hw = (x.shape[-2], x.shape[-1])
                geoms = {i: input_geometry(model.transform, w, h, in_hw) for i, (w, h) in zip(ids, sizes)}
                keep = [p for p in range(s, e) if int(img[p]) in slot]  # unreadable images stay whole
                if keep:
                    rows = torch.tensor([slot[int(img[p])] for p in keep], device=dev)
                    heat, start = unit_heatmaps(attribution, composite, x[rows], name, unit[keep].to(dev),
                                                info.channel_dim)
                    heat = smooth(heat) * (start > 0)[:, None, None]
                    bx, valid = boxes_from_maps(heat, in_hw, threshold)
                    for p, box, ok in zip(keep, bx.cpu().tolist(), valid.cpu().tolist()):
                        geom = geoms[int(img[p])]
                        ob = geom.to_original(*box)
                        if ok and ob != (0, 0, geom.width, geom.height):
                            boxes.view(-1, 4)[flat[p]] = torch.tensor(ob)
                            has.view(-1)[flat[p]] = True
                bar.advance(e - s)
            out[name] = (boxes, has)
    return out


def _chunk_images(dataset, transform, img: torch.Tensor, chunks: list[tuple[int, int]], device):
    """For each chunk of (image-sorted) pairs, its distinct images as (ids, inputs, sizes); loaded one chunk ahead."""

    def load(chunk):
        ids = torch.unique(img[chunk[0]:chunk[1]]).tolist()
        return next(load_batches(dataset, ids, transform, len(ids), device), ([], None, []))

    yield from prefetch_chunks(chunks, load)


@register_crop_mode("relevance")
def _relevance_crop(context: CropContext, examples: dict[str, ConceptExamples]) -> dict[str, ConceptExamples]:
    from unitlens.relevance.composite import composite_for

    model = context.loaded_model()
    try:
        composite = composite_for(model.model, f"model '{model.name}'")
    except RelevanceUnavailable as err:
        msg = f"{err}. Using activation-map crops instead."
        warnings.warn(msg, stacklevel=2)
        context.notes.append(msg)
        return crop_examples(context, examples, "activation")
    infos = {info.name: info for info in context.atlas.layers}
    requests = {n: (infos[n], ex) for n, ex in examples.items()}
    boxes = relevance_boxes(model, composite, context.atlas.dataset(), requests, threshold=context.threshold,
                            batch_size=context.batch_size, device=context.device, progress=context.progress)
    return {n: replace(ex, boxes=boxes[n][0], has_box=boxes[n][1], crop="relevance") for n, ex in examples.items()}


def unit_heatmaps_for(model, layer: str, unit: int, images: list, channel_dim: int = 1, device=None
                      ) -> torch.Tensor:
    """Smoothed relevance heatmaps (n, H, W) of one unit on PIL ``images`` (at the model's input size)."""
    from crp.attribution import CondAttribution

    from unitlens.relevance.attribute import unit_heatmaps
    from unitlens.relevance.composite import composite_for

    composite = composite_for(model.model, f"model '{model.name}'")
    dev = pick_device(device)
    net = prepare_model(model.model, dev)
    x = torch.stack([model.transform(im) for im in images]).to(dev)
    heat, start = unit_heatmaps(CondAttribution(net, device=dev), composite, x, layer,
                                torch.full((len(images),), int(unit), device=dev), channel_dim)
    return (smooth(heat) * (start > 0)[:, None, None]).cpu()


def masked_example(image, heatmap: torch.Tensor, transform=None, box=None, threshold: float = MASK_THRESHOLD,
                   opacity: float = MASK_OPACITY):
    """``image`` (PIL) with a black mask of ``opacity`` over pixels whose relevance is below ``threshold`` x the
    heatmap's maximum (pixels the model did not see count as masked), cropped to ``box`` when given."""
    from PIL import Image

    H, W = heatmap.shape
    geom = input_geometry(transform, image.width, image.height, (H, W))
    # heatmap value of every original pixel: its model-input coordinate x_in = (x_orig + 0.5 - b) / a
    xs = ((np.arange(image.width) + 0.5 - geom.bx) / geom.ax).astype(int)
    ys = ((np.arange(image.height) + 0.5 - geom.by) / geom.ay).astype(int)
    inside = (xs[None, :] >= 0) & (xs[None, :] < W) & (ys[:, None] >= 0) & (ys[:, None] < H)
    heat = heatmap.numpy()[np.clip(ys, 0, H - 1)[:, None], np.clip(xs, 0, W - 1)[None, :]]
    peak = float(heatmap.max())
    keep = inside & (heat >= threshold * peak) if peak > 0 else inside
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    pixels = np.where(keep[..., None], pixels, pixels * (1.0 - opacity))
    out = Image.fromarray(pixels.round().astype(np.uint8))
    if box is None:
        return out
    x0, y0, x1, y1 = (int(v) for v in box)
    return out.crop((x0, y0, x1, y1))


def relevance_card(atlas, layer: str, unit: int, out, m: int = 8, model=None, device=None):
    """A unit card (``report.lens_plots.plot_unit_card``) of the unit's ``m`` most activating samples, each cropped
    to its relevance box and masked below 2 % of its heatmap's maximum, as the paper shows concept examples."""
    from pathlib import Path

    from unitlens.atlas.atlas import Atlas

    atlas = Atlas.open(atlas)
    model = model or atlas.load_model()
    ex = select_examples(atlas, layer, m)
    keep = torch.nonzero(ex.mask[unit]).flatten().tolist()
    dataset = atlas.dataset()
    images = [dataset.image(int(ex.ids[unit, j])) for j in keep]
    heat = unit_heatmaps_for(model, layer, unit, images, atlas.layer(layer).channel_dim, device)
    shown = []
    for img, h in zip(images, heat):
        geom = input_geometry(model.transform, img.width, img.height, tuple(h.shape))
        box, valid = boxes_from_maps(h[None], tuple(h.shape))
        x0, y0, x1, y1 = geom.to_original(*box[0].tolist()) if bool(valid[0]) else (0, 0, img.width, img.height)
        shown.append(masked_example(img, h, model.transform, box=(x0, y0, x1, y1)))
    return plot_unit_card(shown, [float(ex.vals[unit, j]) for j in keep], Path(out),
                          f"{layer} #{unit}: {len(shown)} top concept examples, relevance crops, 2 % mask")
