"""``compute_predicted_relevance(atlas)``: for every unit, the classes it is most relevant for.

Every sample explains its own top-1 class (one backward per batch, each sample with its own target); shares
(``stats.shares``) are aggregated per (unit, predicted class), and each unit keeps its ``top`` classes by mean share
over the samples predicted as that class. This answers the audit's "what else is this unit used for".
"""
from __future__ import annotations

import time

import pandas as pd

from unitlens.errors import RelevanceError
from unitlens.relevance.defaults import BATCH_SIZE
from unitlens.relevance.session import (
    conservation_summary,
    explain_batches,
    open_session,
    top_predictions,
)
from unitlens.relevance.stats import ClassShareStats
from unitlens.relevance.store import write_result


def _names(loaded, classes: list[int]) -> dict[int, str]:
    from unitlens.zoo.classes import class_names, short_name

    names = class_names(loaded)
    return {c: short_name(names[c]) if names and c < len(names) else str(c) for c in classes}


def compute_predicted_relevance(atlas, layers=None, data=None, batch_size: int = BATCH_SIZE, device=None,
                                progress: bool = True, top: int = 5, model=None) -> pd.DataFrame:
    """Top ``top`` classes per unit of ``layers`` by relevance share for the predicted class; stored as
    ``relevance/predicted.parquet`` (layer, unit, rank, class_index, class_name, rel_mean, rel_max,
    rel_raw_mean, n_samples) and returned."""
    t0 = time.perf_counter()
    session = open_session(atlas, layers=layers, data=data, device=device, model=model)
    with session.atlas.writing("relevance --predicted"):
        predictions = top_predictions(session, progress=progress)
        if predictions.empty:
            raise RelevanceError(f"no readable sample in {session.data_spec}")
        ids = predictions["id"].astype(int).tolist()
        targets = [int(top5[0]) for top5 in predictions["top5"]]
        stats: dict[str, ClassShareStats] = {}

        def on_batch(chunk, batch_targets, _logits, rel):
            for layer, r in rel.items():
                if layer not in stats:
                    stats[layer] = ClassShareStats(r.shape[1], targets)
                stats[layer].add(r, batch_targets.tolist())

        explain_batches(session, ids, targets, batch_size, progress, on_batch, label="relevance (predicted classes)")
        frame = pd.concat([stats[layer].frame(layer, top) for layer in session.layers], ignore_index=True)
        names = _names(session.loaded, sorted(set(targets)))
        frame.insert(4, "class_name", frame["class_index"].map(names))
        meta = {**session.describe(), "samples": "predicted top-1 class of every sample", "n_samples": len(ids),
                "n_classes": len(set(targets)), "top": top, "layers": list(session.layers),
                "conservation": conservation_summary(session), "seconds": time.perf_counter() - t0}
        write_result(session.atlas, "predicted", frame, meta)
        return frame
