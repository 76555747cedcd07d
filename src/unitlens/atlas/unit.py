"""``Unit``: one unit of an atlas as one object (``atlas.unit(layer, i)``): its statistics, exemplars, scores and
labels, the images that drive it, and a notebook view of all of it."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd

from unitlens import notebook

if TYPE_CHECKING:
    from PIL import Image

    from unitlens.atlas.atlas import Atlas


@dataclass(frozen=True)
class Unit:
    """Unit ``index`` of layer ``layer`` of ``atlas``."""

    atlas: Atlas
    layer: str
    index: int

    @cached_property
    def stats(self) -> dict[str, Any]:
        """Its row of ``units.parquet``: type, depth, widths, n, min, max, mean, std, constant, ties."""
        units = self.atlas.units()
        row = units[(units["layer"] == self.layer) & (units["unit"] == self.index)]
        return row.iloc[0].to_dict()

    @cached_property
    def exemplars(self) -> pd.DataFrame:
        """Its k most (``side`` top, descending) and least (bottom, ascending) activating samples: rank, sample id,
        activation, path."""
        ex = self.atlas.exemplars(self.layer)
        paths = self.atlas.samples().set_index("id")["path"]
        rows = []
        for side, ids, vals in (("top", ex.top_ids, ex.top_vals), ("bottom", ex.bottom_ids, ex.bottom_vals)):
            for rank, (i, v) in enumerate(zip(ids[self.index].tolist(), vals[self.index].tolist())):
                rows.append({"side": side, "rank": rank, "id": i, "activation": v, "path": paths.get(i)})
        return pd.DataFrame(rows)

    @cached_property
    def scores(self) -> pd.DataFrame:
        """Every score written for it (metric, backend, value), MIS and the lens measures among them."""
        frame = self.atlas.scores()
        mine = frame[(frame["layer"] == self.layer) & (frame["unit"] == self.index)]
        return mine[["metric", "backend", "value"]].reset_index(drop=True)

    @cached_property
    def labels(self) -> pd.DataFrame:
        """Its label from every stored label set: method, backend, probe, label, score, score_name, concepts."""
        frame = self.atlas.labels()
        mine = frame[(frame["layer"] == self.layer) & (frame["unit"] == self.index)]
        return mine[["method", "backend", "probe", "label", "score", "score_name", "concepts"]].reset_index(drop=True)

    def images(self, side: str = "top", n: int = 9) -> list[Image.Image]:
        """The ``n`` images that drive it hardest up (``side="top"``) or down (``"bottom"``).

        Parameters
        ----------
        side : {"top", "bottom"}
            The most activating (``top``) or least activating (``bottom``) exemplars.
        n : int
            How many, at most the atlas's k.

        Returns
        -------
        list of PIL.Image.Image
            The exemplar images, strongest first, as stored (not preprocessed).

        Raises
        ------
        ValueError
            If ``side`` is neither ``top`` nor ``bottom``.
        """
        if side not in ("top", "bottom"):
            raise ValueError(f"side must be 'top' or 'bottom', got {side!r}")
        ids = self.exemplars[self.exemplars["side"] == side]["id"].head(n).tolist()
        data = self.atlas.dataset()
        return [data.image(i) for i in ids]

    def _repr_html_(self) -> str:
        facts: dict[str, Any] = {k: self.stats[k] for k in ("type", "depth", "min", "max", "mean", "std", "constant")
                 if k in self.stats}
        parts = [notebook.header(f"unit {self.index} of {self.layer}", facts)]
        if len(self.scores):
            parts.append(notebook.table(self.scores, "scores"))
        if len(self.labels):
            parts.append(notebook.table(self.labels, "labels"))
        for side, what in (("top", "most activating"), ("bottom", "least activating")):
            rows = self.exemplars[self.exemplars["side"] == side].head(9)
            imgs = self.images(side, 9)
            parts.append(notebook.images([(im, f"{a:.3g}") for im, a in zip(imgs, rows["activation"])],
                                         title=f"{what} images (activation)"))
        return "".join(parts)
