"""``predicted_relevance(atlas)``: for every unit, the classes it is most relevant for.

Every sample explains its own top-1 class (one backward per batch, each sample with its own target); shares
(``stats.shares``) are aggregated per (unit, predicted class), and each unit keeps its ``top_classes`` classes by
mean share over the samples predicted as that class. This answers the audit's "what else is this unit used for".
"""
from __future__ import annotations

import time

import pandas as pd

from unitlens.errors import RelevanceError
from unitlens.options import takes_options
from unitlens.relevance.options import PredictedOptions
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


@takes_options(PredictedOptions)
def predicted_relevance(atlas, options: PredictedOptions | None = None, *, data=None, model=None,
                        progress: bool = True) -> pd.DataFrame:
    """The classes every unit of the chosen layers is most relevant for, each sample explaining its own top-1
    class; stored in the atlas.

    Parameters
    ----------
    atlas
        A complete atlas (``Atlas`` or its folder).
    options
        A ``PredictedOptions``; any of its fields may also be given as a keyword argument (see below).
    data
        Other images to explain on (a folder or a .txt/.csv file list; default: the atlas's samples).
    model
        The analysed ``LoadedModel`` (default: loaded from the atlas's manifest, its weights checked).
    progress
        Show progress bars.

    Returns
    -------
    pandas.DataFrame
        Per unit its ``top_classes`` classes: layer, unit, rank, class_index, class_name, rel_mean, rel_max,
        rel_raw_mean, n_samples; also written to ``<atlas>/relevance/predicted.parquet`` with its meta (the options
        among it), and read back by ``relevant_classes``.
    """
    options = options or PredictedOptions()
    t0 = time.perf_counter()
    session = open_session(atlas, layers=options.layers, data=data, device=options.device, model=model,
                           channels_last=options.channels_last)
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

        explain_batches(session, ids, targets, options.batch_size, progress, on_batch,
                        label="relevance (predicted classes)")
        frame = pd.concat([stats[layer].frame(layer, options.top_classes) for layer in session.layers],
                          ignore_index=True)
        names = _names(session.loaded, sorted(set(targets)))
        frame.insert(4, "class_name", frame["class_index"].map(names))
        meta = {**session.describe(), "samples": "predicted top-1 class of every sample", "n_samples": len(ids),
                "n_classes": len(set(targets)), "layers": list(session.layers),
                "conservation": conservation_summary(session), "seconds": time.perf_counter() - t0,
                "options": options.as_dict()}
        write_result(session.atlas, "predicted", frame, meta)
        return frame
