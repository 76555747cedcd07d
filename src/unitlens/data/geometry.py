"""Where a model's input sits in the original image: the geometry of a resize / centre-crop preprocessing.

``input_geometry(transform, width, height, input_hw)`` maps model-input pixel coordinates back to pixels of the
original image, so crop boxes found on the model input (activation maps, relevance heatmaps) can be cut from the
original file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


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
