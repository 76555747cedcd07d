"""``class_relevance(atlas, cls)``: how relevant every unit of the analysed layers is for one output class.

For every chosen sample, one CRP backward from the class logit (ε z⁺ ♭ composite) gives the relevance R_k of every
unit of every requested layer at once; per sample and layer, share_k = R_k / Σ_j |R_j|. Stored per unit: the mean
and max share over the samples (``rel_mean``, ``rel_max``), the mean raw relevance, the number of samples and the
samples with the highest share (``top_ids``).

Samples (``samples``): ``top5`` (default) — those whose top-5 predictions contain the class, as the SemanticLens
paper explains a class on the images the model sees it in; ``top1`` — those predicted as the class; ``all`` —
every sample.
"""
from __future__ import annotations

import time

import pandas as pd

from unitlens.errors import BadInput, RelevanceError
from unitlens.options import takes_options
from unitlens.relevance.defaults import SAMPLE_RULES
from unitlens.relevance.options import RelevanceOptions
from unitlens.relevance.session import (
    conservation_summary,
    explain_batches,
    open_session,
    top_predictions,
)
from unitlens.relevance.stats import ShareStats
from unitlens.relevance.store import CLASS_COLUMNS, write_result


def class_label(loaded, spec) -> tuple[int, str, str]:
    """(index, short name, full description) of class ``spec`` of a loaded model."""
    from unitlens.zoo.classes import class_names, resolve_class, short_name

    try:
        index, _ = resolve_class(loaded, spec)
    except ValueError as err:
        raise RelevanceError(str(err)) from err
    names = class_names(loaded)
    description = names[index] if names else str(index)
    return index, short_name(description), description


def select_samples(predictions: pd.DataFrame, index: int, rule: str) -> list[int]:
    """Sample ids that explain class ``index`` under ``rule`` (top5, top1, all)."""
    if rule not in SAMPLE_RULES:
        raise BadInput(f"unknown sample rule '{rule}'; choose one of {', '.join(SAMPLE_RULES)}")
    if rule == "all":
        return predictions["id"].astype(int).tolist()
    depth = 5 if rule == "top5" else 1
    keep = [index in list(top)[:depth] for top in predictions["top5"]]
    return predictions.loc[keep, "id"].astype(int).tolist()


@takes_options(RelevanceOptions)
def class_relevance(atlas, cls, options: RelevanceOptions | None = None, *, data=None, model=None,
                    progress: bool = True) -> pd.DataFrame:
    """Relevance of every unit of the chosen layers for one output class, stored in the atlas.

    Parameters
    ----------
    atlas
        A complete atlas (``Atlas`` or its folder).
    cls
        The class: its index, or a name or synonym of the model's class names (``"analog clock"``).
    options
        A ``RelevanceOptions``; any of its fields may also be given as a keyword argument (see below).
    data
        Other images to explain on (a folder or a .txt/.csv file list; default: the atlas's samples).
    model
        The analysed ``LoadedModel`` (default: loaded from the atlas's manifest, its weights checked).
    progress
        Show progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per unit: layer, unit, class_index, class_name, rel_mean, rel_max, rel_raw_mean, n_samples,
        top_ids; also written to ``<atlas>/relevance/class_<index>.parquet`` with its meta (the options among it)
        beside it, and read back by ``load_relevance``.
    """
    options = options or RelevanceOptions()
    t0 = time.perf_counter()
    session = open_session(atlas, layers=options.layers, data=data, device=options.device, model=model,
                           channels_last=options.channels_last)
    with session.atlas.writing("relevance"):
        index, name, description = class_label(session.loaded, cls)
        predictions = top_predictions(session, progress=progress)
        ids = select_samples(predictions, index, options.samples)
        if not ids:
            raise RelevanceError(
                f"no sample of {session.data_spec} has class {index} ({name}) among its {options.samples} "
                "predictions; explain it on every sample with --samples all (Python: samples='all') or give images "
                "of the class with --data")
        stats: dict[str, ShareStats] = {}

        def on_batch(chunk, _targets, _logits, rel):
            for layer, r in rel.items():
                if layer not in stats:
                    stats[layer] = ShareStats(r.shape[1], options.top_n)
                stats[layer].add(r, chunk)

        explain_batches(session, ids, [index] * len(ids), options.batch_size, progress, on_batch,
                        label=f"relevance {name}")
        frame = pd.concat([stats[layer].frame(layer) for layer in session.layers], ignore_index=True)
        frame.insert(2, "class_index", index)
        frame.insert(3, "class_name", name)
        frame = frame[CLASS_COLUMNS]
        meta = {**session.describe(), "class_index": index, "class_name": name, "description": description,
                "samples": options.samples, "n_samples": len(ids), "layers": list(session.layers),
                "conservation": conservation_summary(session), "seconds": time.perf_counter() - t0,
                "options": options.as_dict()}
        write_result(session.atlas, f"class_{index}", frame, meta)
        return frame
