"""Concept examples E_k: the m most activating samples of every unit, from the recorded exemplars.

``select_examples(atlas, layer, m)`` gives them whole (no crop box), leaving out images at the unit's minimum;
``unitlens.lens.crops`` sets crop boxes on them with a crop mode (activation map, CRP relevance).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from unitlens.atlas.atlas import Atlas
from unitlens.errors import BadInput


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
        raise BadInput("m (concept examples per unit) must be at least 1")
    ex = atlas.exemplars(layer)  # a missing or damaged file is a CorruptFile naming it
    if ex.k < m:
        warnings.warn(f"layer {layer}: the atlas keeps {ex.k} exemplars per unit, fewer than m={m}; using {ex.k}",
                      stacklevel=2)
        m = ex.k
    ids = ex.top_ids[:, :m].clone()
    vals = ex.top_vals[:, :m].float().clone()
    # an image at the unit's minimum is no activating example: a sparse unit (an SAE feature that is 0 on all but a
    # few images) keeps only the images that activate it, not the lowest-id ones of its ties at 0
    floor = ex.bottom_vals[:, :1].float()
    above = (vals > floor) | (ex.top_vals[:, :1].float() <= floor)  # constant units keep theirs (flagged anyway)
    mask = torch.isfinite(vals) & (ids >= 0) & above
    U = ids.shape[0]
    return ConceptExamples(layer=layer, units=torch.arange(U), ids=ids, vals=vals, mask=mask,
                           boxes=torch.zeros(U, m, 4, dtype=torch.int64),
                           has_box=torch.zeros(U, m, dtype=torch.bool))
