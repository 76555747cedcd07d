"""Open any image file as 8-bit RGB: transparency composited onto white, high bit depths scaled, not clipped.

Pillow's own ``convert("RGB")`` clips 16-bit and 32-bit integer images (``I;16``, ``I``) and float images (``F``)
at 255, so a PNG spanning 0-65535 comes out almost white. ``open_rgb`` scales them instead:

- ``I;16`` / ``I;16B`` / ``I;16L`` / ``I;16N`` (16-bit grey): value / 257, so 0-65535 maps onto 0-255;
- ``I`` (32-bit integer; also how older Pillows open 16-bit PNGs): values within 0-65535 as 16-bit, any other
  range min-max scaled over the image;
- ``F`` (32-bit float, e.g. float TIFFs): values within [0, 1] times 255, within [0, 255] as they are, any other
  range min-max scaled over the image; NaN becomes 0.

Modes with alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, ``P`` with a transparent colour) are
composited onto white; every other mode (``L``, ``P``, ``1``, ``CMYK``, ``YCbCr``, ...) goes through Pillow.

Decompression bombs: Pillow refuses images of more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` pixels
(``DecompressionBombError``; ``unitlens.data.unreadable`` turns it into a reason that says so and how to raise
the limit for trusted files) and warns on each image above the limit itself. That per-image warning names no file and
floods long runs, so ``open_rgb`` keeps an "ignore" filter for it (only that category) at the front of the warning
filters; such images are decoded normally.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

# Pillow's per-image "could be decompression bomb DOS attack" warning (images between 1x and 2x the pixel limit,
# which Pillow decodes anyway) names no file; bigger images still fail, with a reason (data.unreadable).
QUIET_BOMB_WARNING = ("ignore", None, Image.DecompressionBombWarning, None, 0)

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """A high-bit-depth grey array as 0-255 uint8, scaled as the module docstring says."""
    v = values.astype(np.float64)
    if mode == "F":
        v = np.where(np.isnan(v), 0.0, v)
        finite = v[np.isfinite(v)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        v = np.clip(v, lo, hi)
        if lo >= 0 and hi <= 1:
            v = v * 255.0
        elif not (lo >= 0 and hi <= 255):
            v = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    elif mode in SIXTEEN_BIT or (v.size == 0 or (v.min() >= 0 and v.max() <= 65535)):
        v = v / 257.0
    else:  # 32-bit integers beyond the 16-bit range
        lo, hi = float(v.min()), float(v.max())
        v = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """An opened (loaded) image as 8-bit RGB."""
    if img.mode in SIXTEEN_BIT or img.mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img), img.mode), mode="L").convert("RGB")
    if img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_rgb(source: str | Path | IO[bytes]) -> Image.Image:
    """Decode ``source`` (a path or a binary file object) fully, so corrupt files fail here, and return 8-bit RGB."""
    if warnings.filters[:1] != [QUIET_BOMB_WARNING]:  # first, so no "default"/"always" filter put before it wins
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    with Image.open(source) as img:
        img.load()
        return to_rgb(img)

