"""Concept examples E_k: the m most activating samples of every unit, whole or cropped to where the unit fires.

``select_examples(atlas, layer, m)`` reads the recorded top exemplars. ``crop_examples(...)`` then sets a crop
box on every example with a named *crop mode*:

- ``none``: the whole image (no box);
- ``activation``: the positive part of the unit's activation map, upsampled (bilinearly) to the model input,
  keeping pixels at ≥ 1 % of the map's maximum (the paper's threshold); the box is the bounding box of those
  pixels, mapped back to pixel coordinates of the original image through the model's resize / centre-crop
  preprocessing. A map with no positive value keeps the whole image; a box equal to the whole image is stored
  as no box (it shares the whole-image embedding). With a centre-crop transform a map that passes the
  threshold everywhere gives the region the model saw (e.g. the central 87.5 %), not the whole image. Signed
  layers without a non-linearity often stay above 1 % of their maximum almost everywhere, so their crops are
  close to that visible region; the threshold is a parameter (``threshold``, CLI ``--crop-threshold``).

Crop modes are a registry (``register_crop_mode``): a relevance-based (CRP) mode is one more function with the
same signature, ``fn(context, {layer: ConceptExamples}) -> {layer: ConceptExamples}``.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from unitlens.atlas.atlas import Atlas, AtlasError

ACTIVATION_THRESHOLD = 0.01  # keep pixels >= 1 % of the map's maximum (paper, section 3.1)


class LensError(RuntimeError):
    """A SemanticLens step cannot run: missing embeddings, bad probe, unknown layer, mismatched atlases."""


@dataclass
class ConceptExamples:
    """The m concept examples of every unit of one layer.

    ``ids``/``vals`` are (U, m) sample ids and activations in descending order; ``mask`` (U, m) marks valid
    examples (a unit can have fewer than m exemplars); ``boxes`` (U, m, 4) are (x0, y0, x1, y1) crop boxes in
    original-image pixels where ``has_box`` (U, m) is true, else the whole image is used.
    """

    layer: str
    units: torch.Tensor
    ids: torch.Tensor
    vals: torch.Tensor
    mask: torch.Tensor
    boxes: torch.Tensor
    has_box: torch.Tensor
    crop: str = "none"

    @property
    def m(self) -> int:
        return self.ids.shape[1]

    def keys(self) -> tuple[list[int], list[tuple[int, int, int, int] | None]]:
        """Flat (sample id, crop box or None) lists of the valid examples, row-major over (unit, example)."""
        sel = self.mask.reshape(-1)
        ids = self.ids.reshape(-1)[sel].tolist()
        boxes = self.boxes.reshape(-1, 4)[sel].tolist()
        has = self.has_box.reshape(-1)[sel].tolist()
        return ids, [tuple(b) if h else None for b, h in zip(boxes, has)]


def select_examples(atlas: Atlas, layer: str, m: int = 30) -> ConceptExamples:
    """The ``m`` most activating samples of every unit of ``layer`` (all units), from the recorded exemplars."""
    if m < 1:
        raise ValueError("m (concept examples per unit) must be at least 1")
    try:
        ex = atlas.exemplars(layer)
    except FileNotFoundError as err:
        raise AtlasError(f"atlas {atlas.path} has no exemplars for layer '{layer}' ({err}); record it again") from err
    if ex.k < m:
        warnings.warn(f"layer {layer}: the atlas keeps {ex.k} exemplars per unit, fewer than m={m}; using {ex.k}",
                      stacklevel=2)
        m = ex.k
    ids = ex.top_ids[:, :m].clone()
    vals = ex.top_vals[:, :m].float().clone()
    mask = torch.isfinite(vals) & (ids >= 0)
    U = ids.shape[0]
    return ConceptExamples(layer=layer, units=torch.arange(U), ids=ids, vals=vals, mask=mask,
                           boxes=torch.zeros(U, m, 4, dtype=torch.int64),
                           has_box=torch.zeros(U, m, dtype=torch.bool))


# ------------------------------------------------------------------------------------------ crop-mode registry
@dataclass
class CropContext:
    """What a crop mode may need: the atlas, the analysed model (loaded on first use), device and batching."""

    atlas: Atlas
    model: object | None = None  # a unitlens.zoo.LoadedModel; loaded from the atlas manifest when None
    device: str | torch.device | None = None
    batch_size: int = 32
    threshold: float = ACTIVATION_THRESHOLD
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    def loaded_model(self):
        if self.model is None:
            self.model = load_atlas_model(self.atlas)
        return self.model


CropFn = Callable[[CropContext, dict[str, ConceptExamples]], dict[str, ConceptExamples]]
_CROP_MODES: dict[str, CropFn] = {}


def register_crop_mode(name: str) -> Callable[[CropFn], CropFn]:
    """Register ``fn(context, {layer: ConceptExamples}) -> {layer: ConceptExamples with boxes}`` as ``name``."""

    def deco(fn: CropFn) -> CropFn:
        _CROP_MODES[name] = fn
        return fn

    return deco


def crop_modes() -> list[str]:
    return sorted(_CROP_MODES)


def crop_examples(context: CropContext, examples: dict[str, ConceptExamples], mode: str) -> dict[str, ConceptExamples]:
    """Set the crop boxes of every layer's examples with crop mode ``mode``."""
    if mode not in _CROP_MODES:
        raise ValueError(f"unknown crop mode '{mode}'; choose one of {', '.join(crop_modes())}")
    return _CROP_MODES[mode](context, examples)


@register_crop_mode("none")
def _no_crop(context: CropContext, examples: dict[str, ConceptExamples]) -> dict[str, ConceptExamples]:
    return {name: replace(ex, has_box=torch.zeros_like(ex.has_box), crop="none") for name, ex in examples.items()}


@register_crop_mode("activation")
def _activation_crop(context: CropContext, examples: dict[str, ConceptExamples]) -> dict[str, ConceptExamples]:
    model = context.loaded_model()
    infos = {info.name: info for info in context.atlas.layers}
    boxes = activation_boxes(model, context.atlas.dataset(), {n: (infos[n], ex) for n, ex in examples.items()},
                             threshold=context.threshold, batch_size=context.batch_size, device=context.device,
                             progress=context.progress, notes=context.notes)
    return {n: replace(ex, boxes=boxes[n][0], has_box=boxes[n][1], crop="activation") for n, ex in examples.items()}


def load_atlas_model(atlas: Atlas):
    """Load the model an atlas was recorded with (same name and weights); error if the weights differ."""
    from unitlens.zoo import load_model

    cfg = atlas.manifest.get("config", {})
    name, weights = cfg.get("model"), cfg.get("weights")
    if not name:
        raise LensError(f"atlas {atlas.path} does not name its model; pass the model to the Python API")
    try:
        if weights == "pretrained":
            loaded = load_model(name)
        elif weights == "random":
            loaded = load_model(name, pretrained=False)
        else:
            loaded = load_model(name, checkpoint=weights)
    except Exception as err:  # unknown names (hand-built test models), missing weights, missing checkpoints
        raise LensError(f"cannot load the analysed model '{name}' (weights {weights}) of atlas {atlas.path} to "
                        f"compute activation crops: {err}. Pass the model to the Python API "
                        "(embed_atlas(..., model=LoadedModel)) or use --crop none") from err
    want = cfg.get("weights_hash")
    if want and loaded.weights_hash() != want:
        raise LensError(f"the model '{name}' loaded now (weights {weights}) is not the one atlas {atlas.path} was "
                        f"recorded with (weights hash {loaded.weights_hash()} != {want}); pass that model to the "
                        "Python API or use --crop none")
    return loaded


# ------------------------------------------------------------------------------------------ input geometry
@dataclass(frozen=True)
class Geometry:
    """Maps model-input pixel coordinates to original-image pixels: orig = a * x_in + b, per axis."""

    ax: float
    bx: float
    ay: float
    by: float
    width: int  # original image size
    height: int

    def to_original(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        ox0, ox1 = self.ax * x0 + self.bx, self.ax * x1 + self.bx
        oy0, oy1 = self.ay * y0 + self.by, self.ay * y1 + self.by
        bx0 = max(0, min(self.width - 1, math.floor(ox0 + 1e-6)))
        by0 = max(0, min(self.height - 1, math.floor(oy0 + 1e-6)))
        bx1 = max(bx0 + 1, min(self.width, math.ceil(ox1 - 1e-6)))
        by1 = max(by0 + 1, min(self.height, math.ceil(oy1 - 1e-6)))
        return bx0, by0, bx1, by1


_NON_GEOMETRIC = {"ToTensor", "PILToTensor", "MaybeToTensor", "MaybePILToTensor", "Normalize", "ConvertImageDtype",
                  "ToDtype", "ToImage", "ToPILImage", "Grayscale", "RGB", "Lambda"}


def _resize_size(size, w: int, h: int) -> tuple[int, int]:
    """Output (w, h) of torchvision ``Resize(size)`` on a (w, h) image (shorter side for an int)."""
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[1]), int(size[0])
    s = int(size[0] if isinstance(size, (list, tuple)) else size)
    if w <= h:
        return s, int(s * h / w)
    return int(s * w / h), s


def input_geometry(transform, width: int, height: int, input_hw: tuple[int, int]) -> Geometry:
    """How the model input (``input_hw``) produced by ``transform`` sits in a ``width`` x ``height`` image.

    Follows torchvision/timm ``Resize`` and ``CenterCrop`` steps of a ``Compose``; any other transform (a plain
    function, an unknown geometric step) is taken as a stretch of the whole image onto the input.
    """
    w, h = float(width), float(height)
    ax = ay = 1.0
    bx = by = 0.0
    steps = getattr(transform, "transforms", None)
    ok = steps is not None
    for t in steps or []:
        kind = type(t).__name__
        if kind in _NON_GEOMETRIC:
            continue
        if kind == "Resize":
            nw, nh = _resize_size(t.size, int(w), int(h))
            ax, ay = ax * w / nw, ay * h / nh
            w, h = float(nw), float(nh)
        elif kind == "CenterCrop":
            ch, cw = (t.size, t.size) if isinstance(t.size, int) else (t.size[0], t.size[-1])
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            bx, by = bx + ax * left, by + ay * top
            w, h = float(cw), float(ch)
        else:
            ok = False
            break
    in_h, in_w = input_hw
    if not ok or (int(w), int(h)) != (in_w, in_h):
        return Geometry(width / in_w, 0.0, height / in_h, 0.0, width, height)
    return Geometry(ax, bx, ay, by, width, height)


# ------------------------------------------------------------------------------------------ activation maps
def spatial_map(output: torch.Tensor, channel_dim: int, prefix_tokens: int | None = None) -> torch.Tensor | None:
    """A layer output as (B, C, H, W) maps, or None if it has no spatial dimensions.

    (B, C, H, W) stays as it is (``channel_dim`` 1); (B, H, W, C) is permuted; (B, T, C) tokens become a g x g
    grid of the last g² tokens (``prefix_tokens`` leading cls/register tokens are skipped; by default
    T − floor(sqrt(T))²).
    """
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.ndim == 4:
        return output if channel_dim in (0, 1) else output.permute(0, 3, 1, 2)
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


class _Stop(Exception):
    """Raised by the last hook to end a forward pass early."""


def activation_boxes(model, dataset, requests: dict[str, tuple], threshold: float = ACTIVATION_THRESHOLD,
                     batch_size: int = 32, device=None, progress: bool = True, notes: list[str] | None = None
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Activation-map crop boxes for concept examples of several layers in one batched forward pass.

    ``requests`` maps a layer name to ``(LayerInfo, ConceptExamples)``. Returns per layer ``(boxes (U, m, 4),
    has_box (U, m))`` in original-image pixels; a box that covers the whole image is returned as no box, so it
    shares the whole-image embedding.
    """
    from unitlens.backends.cache import _progress

    notes = notes if notes is not None else []
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # channels-last runs depthwise convolutions faster on CPU and GPU alike; the numbers are the same
    net = model.model.to(device, memory_format=torch.channels_last).eval()
    modules = dict(net.named_modules())
    prefix = getattr(net, "num_prefix_tokens", None)
    out = {}
    pairs = {}  # layer -> (image ids (P,), channels (P,), flat positions (P,)), sorted by image id
    for name, (info, ex) in requests.items():
        if name not in modules:
            raise LensError(f"layer '{name}' is not a module of the model {model.name}")
        U, m = ex.ids.shape
        out[name] = (torch.zeros(U, m, 4, dtype=torch.int64), torch.zeros(U, m, dtype=torch.bool))
        flat = torch.nonzero(ex.mask.reshape(-1)).flatten()
        img = ex.ids.reshape(-1)[flat]
        ch = ex.units.repeat_interleave(m)[flat]
        order = torch.argsort(img, stable=True)
        pairs[name] = (img[order], ch[order], flat[order])
    all_ids = torch.unique(torch.cat([p[0] for p in pairs.values()])) if pairs else torch.empty(0, dtype=torch.int64)
    if len(all_ids) == 0:
        return out
    captured: dict[str, torch.Tensor] = {}
    wanted = set(requests)

    def hook_for(name):
        def hook(_module, _inputs, output):
            if name not in captured:
                captured[name] = (output[0] if isinstance(output, (tuple, list)) else output).detach()
            if wanted <= set(captured):
                raise _Stop
        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in requests]
    warned: set[str] = set()

    def load(sample_id: int):
        image = dataset.image(sample_id)
        return model.transform(image), image.size

    chunks = [all_ids[s:s + batch_size] for s in range(0, len(all_ids), batch_size)]
    try:
        with _progress(progress) as bar, ThreadPoolExecutor(max(1, min(4, torch.get_num_threads()))) as pool, \
                torch.inference_mode():
            task = bar.add_task("activation maps", total=len(all_ids))
            ahead = [pool.submit(load, int(i)) for i in chunks[0]]
            for c, batch_ids in enumerate(chunks):
                loaded = [f.result() for f in ahead]
                ahead = [pool.submit(load, int(i)) for i in chunks[c + 1]] if c + 1 < len(chunks) else []
                x = torch.stack([t for t, _ in loaded]).to(device)
                if x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                in_hw = (x.shape[-2], x.shape[-1])
                geoms = [input_geometry(model.transform, w, h, in_hw) for _, (w, h) in loaded]
                captured.clear()
                try:
                    net(x)
                except _Stop:
                    pass
                lo, hi = int(batch_ids[0]), int(batch_ids[-1])
                slot = {int(i): b for b, i in enumerate(batch_ids.tolist())}
                for name, (img, ch, flat) in pairs.items():
                    a = int(torch.searchsorted(img, torch.tensor([lo]))[0])
                    b = int(torch.searchsorted(img, torch.tensor([hi]), right=True)[0])
                    if a == b:
                        continue
                    maps = spatial_map(captured[name], requests[name][0].channel_dim, prefix)
                    if maps is None:
                        if name not in warned:
                            warned.add(name)
                            msg = (f"layer {name}: output {tuple(captured[name].shape)} has no spatial grid; its "
                                   "concept examples stay whole images")
                            warnings.warn(msg, stacklevel=2)
                            notes.append(msg)
                        continue
                    sel_img, sel_ch, sel_flat = img[a:b], ch[a:b], flat[a:b]
                    rows = torch.tensor([slot[int(i)] for i in sel_img.tolist()], device=maps.device)
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
                bar.advance(task, len(batch_ids))
    finally:
        for h in handles:
            h.remove()
    return out
