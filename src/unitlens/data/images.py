"""Open any image file as RGB, compositing transparency onto white (clip art, icons, PNGs with alpha)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image


def open_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` fully (so corrupt files fail here) and return an RGB image."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")
