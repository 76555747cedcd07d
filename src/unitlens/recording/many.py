"""``record_many(models, data, outs)``: several models recorded in one pass over the data.

Each image is decoded once and each distinct preprocessing runs once (``passes.record_pass``); everything else is
``record``'s own machinery: the option checks, each atlas's configuration check, its write lock, checkpoints and
resume, and the atlas writing. So each atlas is identical to the one a separate ``record`` run writes (only the
timing in its manifest differs), and an interrupted ``record_many`` resumes each atlas from its own checkpoint, the
pass starting at the earliest of them.
"""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from unitlens.atlas.lock import writing
from unitlens.data.datasets import ImageDataset
from unitlens.errors import BadInput
from unitlens.options import takes_options
from unitlens.recording.defaults import MERGE_EVERY, K
from unitlens.recording.folder import RecordResult, completed_result, record_config
from unitlens.recording.options import RecordOptions
from unitlens.recording.passes import record_pass
from unitlens.recording.run import prepare_data, select_layers
from unitlens.zoo.factory import LoadedModel, as_loaded_model
from unitlens.zoo.units import LayerInfo


def estimate_bytes(model: LoadedModel, layers: list[LayerInfo], k: int = K, merge_every: int = MERGE_EVERY) -> int:
    """Rough memory a model needs in a shared pass: its weights and the streaming state of its units (keys,
    merge buffer and scratch); activations of one batch are not counted."""
    weights = sum(t.numel() * t.element_size() for t in model.model.state_dict().values())
    units = sum(info.width or 0 for info in layers)
    return int(weights + units * (2 * k * 8 + merge_every * 12 + 2 * (k + merge_every) * 8))


@takes_options(RecordOptions)
def record_many(
    models: Sequence[LoadedModel | str],
    data: ImageDataset | str,
    outs: Sequence[str | Path],
    layers: Sequence[Sequence[LayerInfo] | Sequence[str] | None] | None = None,
    options: RecordOptions | None = None,
    *,
    progress: bool = True,
) -> list[RecordResult]:
    """Record every model of ``models`` on ``data`` into its atlas ``outs[i]`` in one pass over the images.

    Parameters
    ----------
    models, outs
        The models (names or ``LoadedModel`` s, as ``record`` takes them) and, for each, its atlas folder.
    data
        As ``record`` takes it; each image is decoded once and each distinct preprocessing runs once.
    layers
        ``layers[i]``: the layers of model i, as ``record`` takes them (None: chosen by the options).
    options
        A ``RecordOptions`` for every model; its fields may also be given as keyword arguments.
    progress
        Show a progress bar.

    Returns
    -------
    list of RecordResult
        One per model. Finished atlases are left alone and reported as ``already_complete``; the shared pass's
        time is every recorded model's ``seconds``.
    """
    options = options or RecordOptions()
    loaded = [as_loaded_model(m) for m in models]
    outs_ = [Path(o).expanduser().resolve() for o in outs]
    chosen = list(layers) if layers is not None else [None] * len(loaded)
    if not models or len(outs_) != len(loaded) or len(chosen) != len(loaded):
        raise BadInput(f"record_many needs one out folder and one layer list per model; got {len(loaded)} models, "
                       f"{len(outs_)} outs, {len(chosen)} layer lists")
    if len(set(outs_)) != len(outs_):
        raise BadInput("two models of record_many write into the same atlas folder; give each its own out")
    infos = [select_layers(m, c, options) for m, c in zip(loaded, chosen)]
    data = prepare_data(data, None, outs_, options.content_hash, options.force, progress)
    configs = [record_config(m, data, i, options) for m, i in zip(loaded, infos)]
    results: list[RecordResult | None] = [completed_result(o, c, options.force) for o, c in zip(outs_, configs)]
    todo = [i for i, r in enumerate(results) if r is None]
    if todo:
        with ExitStack() as locks:
            for i in todo:
                locks.enter_context(writing(outs_[i], "record"))
            recorded = record_pass([loaded[i] for i in todo], data, [outs_[i] for i in todo], [infos[i] for i in todo],
                                   [configs[i] for i in todo], options, progress)
        for i, result in zip(todo, recorded):
            results[i] = result
    return [r for r in results if r is not None]
