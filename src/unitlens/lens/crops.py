"""Crop modes: where in each concept example a unit fires, as a crop box in original-image pixels.

``crop_examples(context, {layer: ConceptExamples}, mode)`` sets the boxes with a named *crop mode*:

- ``none``: the whole image (no box);
- ``activation``: the positive part of the unit's activation map, upsampled (bilinearly) to the model input,
  keeping pixels at ≥ 1 % of the map's maximum (the paper's threshold); the box is the bounding box of those
  pixels, mapped back to pixel coordinates of the original image through the model's resize / centre-crop
  preprocessing (``unitlens.data.geometry``). A map with no positive value keeps the whole image; a box equal
  to the whole image is stored as no box (it shares the whole-image embedding). With a centre-crop transform a
  map that passes the threshold everywhere gives the region the model saw (e.g. the central 87.5 %), not the
  whole image. Signed layers without a non-linearity often stay above 1 % of their maximum almost everywhere,
  so their crops are close to that visible region; the threshold is a parameter (``threshold``, CLI
  ``--crop-threshold``);
- ``relevance``: the unit's CRP relevance heatmap (``unitlens.relevance.crops``, imported when first asked for,
  so the lens does not load the LRP stack).

Modes are a registry, ``CROP_MODES``: ``register_crop_mode(name)`` adds a function ``fn(context, {layer:
ConceptExamples}) -> {layer: ConceptExamples}``; a lazy entry names the module that registers a mode when first
asked for.

Activation maps come from one forward pass of the analysed model over all images any requested unit needs,
batched over images, with a hook on every requested layer; the pass stops after the deepest hooked layer, and
the maps of all requested (unit, image) pairs of a batch are upsampled and thresholded together. Conv outputs
(B, C, H, W), channel-last maps (B, H, W, C) and token outputs (B, T, C) whose last g² tokens form a square
patch grid (leading cls/register tokens skipped) are supported; a layer without spatial dimensions (B, C) has
no map, and its examples stay whole images (with a warning).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from unitlens.atlas.atlas import Atlas
from unitlens.data.geometry import input_geometry
from unitlens.data.loading import load_batches
from unitlens.errors import LensError, UnitlensError
from unitlens.lens.defaults import ACTIVATION_THRESHOLD
from unitlens.lens.examples import ConceptExamples
from unitlens.registry import Registry
from unitlens.runtime import OutputCapture, Progress, first_tensor, pick_device, prepare_model, split_call
from unitlens.zoo.units import channel_dim_of


@dataclass
class CropContext:
    """What a crop mode may need: the atlas, the analysed model (loaded on first use), device and batching."""

    atlas: Atlas
    model: Any = None  # a unitlens.zoo.LoadedModel; loaded from the atlas manifest when None
    device: str | torch.device | None = None
    batch_size: int = 32
    threshold: float = ACTIVATION_THRESHOLD
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    def loaded_model(self) -> Any:
        if self.model is None:
            try:
                self.model = self.atlas.load_model()
            except UnitlensError as err:
                raise LensError(f"{err} to compute crops, or use --crop none") from err
        return self.model


CropFn = Callable[[CropContext, dict[str, ConceptExamples]], dict[str, ConceptExamples]]
CROP_MODES: Registry[CropFn] = Registry("crop mode")
CROP_MODES.lazy("relevance", "unitlens.relevance.crops")


def register_crop_mode(name: str) -> Callable[[CropFn], CropFn]:
    """Register ``fn(context, {layer: ConceptExamples}) -> {layer: ConceptExamples with boxes}`` as ``name``."""
    return CROP_MODES.register(name)


def crop_modes() -> list[str]:
    """The names of every crop mode (lazy ones included)."""
    return CROP_MODES.names()


def crop_examples(context: CropContext, examples: dict[str, ConceptExamples], mode: str) -> dict[str, ConceptExamples]:
    """Set the crop boxes of every layer's examples with crop mode ``mode``."""
    return CROP_MODES.get(mode)(context, examples)


@register_crop_mode("none")
def _no_crop(context: CropContext, examples: dict[str, ConceptExamples]) -> dict[str, ConceptExamples]:
    return {name: replace(ex, has_box=torch.zeros_like(ex.has_box), crop="none") for name, ex in examples.items()}


@register_crop_mode("activation")
def _activation_crop(context: CropContext, examples: dict[str, ConceptExamples]) -> dict[str, ConceptExamples]:
    derived = [n for n in examples if n in context.atlas.derived_layers]
    if derived:  # basis features are no module of the model: no activation map to crop to
        msg = f"{', '.join(derived)}: derived layers have no activation maps; their concept examples stay whole images"
        warnings.warn(msg, stacklevel=2)
        context.notes.append(msg)
    mapped = {n: ex for n, ex in examples.items() if n not in derived}
    model = context.loaded_model() if mapped else None
    infos = {info.name: info for info in context.atlas.layers}
    boxes = activation_boxes(model, context.atlas.dataset(), {n: (infos[n], ex) for n, ex in mapped.items()},
                             threshold=context.threshold, batch_size=context.batch_size, device=context.device,
                             progress=context.progress, notes=context.notes) if mapped else {}
    return {n: replace(ex, boxes=boxes[n][0], has_box=boxes[n][1], crop="activation") if n in boxes else
            replace(ex, has_box=torch.zeros_like(ex.has_box), crop="activation") for n, ex in examples.items()}


# ------------------------------------------------------------------------------------------ activation maps
def spatial_map(output: torch.Tensor, channel_dim: int, prefix_tokens: int | None = None) -> torch.Tensor | None:
    """A layer output as (B, C, H, W) maps, or None if it has no spatial dimensions.

    (B, C, H, W) stays as it is (``channel_dim`` 1); (B, H, W, C) is permuted; (B, T, C) tokens become a g x g
    grid of the last g² tokens (``prefix_tokens`` leading cls/register tokens are skipped; by default
    T − floor(sqrt(T))²).
    """
    output = first_tensor(output)
    channel_dim = channel_dim_of(output, channel_dim)
    if output.ndim == 4:
        return output if channel_dim == 1 else output.permute(0, 3, 1, 2)
    if output.ndim == 3:
        B, T, C = output.shape if channel_dim != 1 else (output.shape[0], output.shape[2], output.shape[1])
        tokens = output if channel_dim != 1 else output.transpose(1, 2)
        if prefix_tokens is None:
            g = math.isqrt(T)
            prefix_tokens = T - g * g
        g = math.isqrt(T - prefix_tokens)
        if g * g != T - prefix_tokens or g == 0:
            return None
        return tokens[:, prefix_tokens:].transpose(1, 2).reshape(B, C, g, g)
    return None


def boxes_from_maps(maps: torch.Tensor, input_hw: tuple[int, int], threshold: float = ACTIVATION_THRESHOLD
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes (P, 4) in model-input pixels (x0, y0, x1 exclusive) of upsampled (P, h, w) maps.

    The positive part of each map is upsampled bilinearly to ``input_hw``; pixels ≥ ``threshold`` x its maximum
    are kept. ``valid`` (P,) is false where the map has no positive value (no box: use the whole image).
    """
    up = F.interpolate(maps[:, None].float(), size=input_hw, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    peak = up.flatten(1).amax(1)
    valid = peak > 0
    keep = up >= (threshold * peak)[:, None, None]
    keep &= valid[:, None, None]
    rows, cols = keep.any(2), keep.any(1)  # (P, H), (P, W)
    H, W = input_hw
    ar_h, ar_w = torch.arange(H, device=maps.device), torch.arange(W, device=maps.device)
    y0 = torch.where(rows, ar_h, H).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, W).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    return torch.stack([x0, y0, x1, y1], 1), valid


def example_pairs(ex: ConceptExamples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The valid (unit, example) pairs of a layer, sorted by image: (image ids, units, flat positions), each (P,)."""
    m = ex.ids.shape[1]
    flat = torch.nonzero(ex.mask.reshape(-1)).flatten()
    img = ex.ids.reshape(-1)[flat]
    unit = ex.units.repeat_interleave(m)[flat]
    order = torch.argsort(img, stable=True)
    return img[order], unit[order], flat[order]


def activation_boxes(model, dataset, requests: dict[str, tuple], threshold: float = ACTIVATION_THRESHOLD,
                     batch_size: int = 32, device=None, progress: bool = True, notes: list[str] | None = None
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Activation-map crop boxes for concept examples of several layers in one batched forward pass.

    ``requests`` maps a layer name to ``(LayerInfo, ConceptExamples)``. Returns per layer ``(boxes (U, m, 4),
    has_box (U, m))`` in original-image pixels; a box that covers the whole image is returned as no box, so it
    shares the whole-image embedding. Unreadable images keep their examples whole.
    """
    notes = notes if notes is not None else []
    device = pick_device(device)
    # channels-last runs depthwise convolutions faster on CPU and GPU alike; the numbers are the same
    net = prepare_model(model.model, device)
    modules = dict(net.named_modules())  # a layer NAME@i is one call of module NAME
    prefix = getattr(net, "num_prefix_tokens", None)
    out = {}
    pairs = {}  # layer -> (image ids (P,), channels (P,), flat positions (P,)), sorted by image id
    for name, (_info, ex) in requests.items():
        if split_call(name)[0] not in modules:
            raise LensError(f"layer '{name}' is not a module of the model {model.name}")
        U, m = ex.ids.shape
        out[name] = (torch.zeros(U, m, 4, dtype=torch.int64), torch.zeros(U, m, dtype=torch.bool))
        pairs[name] = example_pairs(ex)
    all_ids = torch.unique(torch.cat([p[0] for p in pairs.values()])) if pairs else torch.empty(0, dtype=torch.int64)
    if len(all_ids) == 0:
        return out
    warned: set[str] = set()

    def skipped(sample_id: int, path, err: Exception) -> None:
        warnings.warn(f"cannot read {path} (sample {sample_id}): {err}; its concept examples stay whole images",
                      stacklevel=4)

    with Progress("activation maps", len(all_ids), progress, unit="img") as bar, \
            OutputCapture(net, list(requests)) as capture, torch.inference_mode():
        for batch_ids, x, sizes in load_batches(dataset, all_ids.tolist(), model.transform, batch_size, device,
                                                skipped=skipped):
            in_hw = (x.shape[-2], x.shape[-1])
            geoms = [input_geometry(model.transform, w, h, in_hw) for w, h in sizes]
            captured = capture.run(x)
            slot = {i: b for b, i in enumerate(batch_ids)}
            lo, hi = batch_ids[0], batch_ids[-1]
            for name, (img, ch, flat) in pairs.items():
                a = int(torch.searchsorted(img, torch.tensor([lo]))[0])
                b = int(torch.searchsorted(img, torch.tensor([hi]), right=True)[0])
                keep = [p for p in range(a, b) if int(img[p]) in slot]
                if not keep:
                    continue
                info = requests[name][0]
                windowed = captured[name].shape[0] != x.shape[0]  # (B·windows, ...): no one map per image
                maps = None if windowed else spatial_map(captured[name],
                                                         channel_dim_of(captured[name], info.channel_dim, info.width),
                                                         prefix)
                if maps is None:
                    if name not in warned:
                        warned.add(name)
                        why = "holds attention windows, not one map per image" if windowed else "has no spatial grid"
                        msg = (f"layer {name}: output {tuple(captured[name].shape)} {why}; its "
                               "concept examples stay whole images")
                        warnings.warn(msg, stacklevel=2)
                        notes.append(msg)
                    continue
                keep_t = torch.tensor(keep)
                rows = torch.tensor([slot[int(i)] for i in img[keep_t].tolist()], device=maps.device)
                sel_ch, sel_flat = ch[keep_t], flat[keep_t]
                boxes, has = out[name]
                for s in range(0, len(rows), 256):  # bounded memory: 256 upsampled maps at a time
                    r, chan = rows[s:s + 256], sel_ch[s:s + 256].to(maps.device)
                    bx, valid = boxes_from_maps(maps[r, chan], in_hw, threshold)
                    for k, (box, ok) in enumerate(zip(bx.cpu().tolist(), valid.cpu().tolist())):
                        if not ok:
                            continue
                        pos = int(sel_flat[s + k])
                        geom = geoms[int(r[k])]
                        ob = geom.to_original(*box)
                        if ob == (0, 0, geom.width, geom.height):
                            continue  # the whole image: share the uncropped embedding
                        boxes.view(-1, 4)[pos] = torch.tensor(ob)
                        has.view(-1)[pos] = True
            bar.advance(len(batch_ids))
    return out
