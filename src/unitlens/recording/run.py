"""``record(model, data, out)``: one forward pass with hooks on every selected layer, written as an atlas.

The run checkpoints its streaming state every ``checkpoint_every`` images (atomically); running the same
call again resumes from the last checkpoint and ends with the same atlas as an uninterrupted run. A
finished atlas is left alone unless ``force=True``. The pass itself is ``passes.record_pass``, the atlas's
files ``folder``; ``record_many`` (several models, one pass) shares both and the checks here.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from unitlens.atlas.layout import SAMPLES
from unitlens.atlas.lock import check_writable, writing
from unitlens.data.datasets import ImageDataset, load_dataset
from unitlens.errors import BadInput
from unitlens.options import takes_options
from unitlens.recording.check import check_layers, explicit_names, settle
from unitlens.recording.folder import RecordResult, completed_result, previous_manifest, record_config
from unitlens.recording.options import RecordOptions
from unitlens.recording.passes import record_pass
from unitlens.recording.state import MAX_SAMPLES
from unitlens.runtime import split_call
from unitlens.zoo.factory import LoadedModel, Transform, as_loaded_model
from unitlens.zoo.units import LayerInfo, enumerate_units


@takes_options(RecordOptions)
def record(
    model: LoadedModel | nn.Module | str,
    data: ImageDataset | str,
    out: str | Path,
    layers: Sequence[LayerInfo] | Sequence[str] | None = None,
    options: RecordOptions | None = None,
    *,
    transform: Transform | None = None,
    progress: bool = True,
) -> RecordResult:
    """Record the top-k and bottom-k exemplars and the statistics of every unit of the chosen layers over
    ``data``, and write the atlas to ``out``.

    Parameters
    ----------
    model
        A model name (``"efficientnet_lite0"``, ``"timm:resnet50.a1_in1k"``, ... as ``load_model`` takes it), a
        ``LoadedModel``, or your own ``nn.Module`` (with ``transform``). The atlas of a module handed over in
        Python records its weights hash but cannot load it again: the steps that run the model (relevance,
        audits, feature visualisations, basis fits, probes) then need it passed as ``model=``.
    data
        ``"demo"``, an image folder, a ``.txt``/``.csv`` file list, or an ``ImageDataset``.
    out
        The atlas folder. A run that stops resumes from its last checkpoint when called again and ends with the
        same atlas as an uninterrupted run; a finished atlas is left alone unless ``force=True``.
    layers
        ``LayerInfo`` s (from ``enumerate_units``) or layer names / globs; overrides ``options.layers``. None:
        the layers the options select (every analysable layer of ``types`` but ``exclude`` and, unless
        ``keep_first_last``, the first and last).
    options
        A ``RecordOptions``; any of its fields may also be given as a keyword argument (see below).
    transform
        For an ``nn.Module``: what turns a PIL image into its input (timm modules may leave it out).
    progress
        Show a progress bar.

    Returns
    -------
    RecordResult
        The ``Atlas`` written (``.atlas``), images recorded and skipped, seconds and images per second.

    Every option is checked before anything is written.
    """
    options = options or RecordOptions()
    model = as_loaded_model(model, transform)
    out = Path(out).expanduser().resolve()  # 'a/../b' is b: no stray folder 'a' is created on the way
    infos = select_layers(model, layers, options)
    data = prepare_data(data, model.transform, [out], options.content_hash, options.force, progress)
    config = record_config(model, data, infos, options)
    done = completed_result(out, config, options.force)
    if done is not None:
        return done
    with writing(out, "record"):
        return record_pass([model], data, [out], [infos], [config], options, progress)[0]


def prepare_data(data: ImageDataset | str, transform, outs: list[Path], content_hash: bool | None, force: bool,
                 progress: bool) -> ImageDataset:
    """The dataset to record into ``outs``, with ``transform`` and its content hashes (files unchanged since an
    atlas at ``outs`` hashed them keep their hash). ``content_hash`` None: as the atlases there were recorded
    (before content hashes: without), True for new ones. A place that cannot be written fails now, not after
    hashing."""
    previous = {out: previous_manifest(out) for out in outs}
    for out, manifest in previous.items():
        if manifest is None or not manifest.complete or force:
            check_writable(out)
    if content_hash is None:
        recorded = {m.config.content_hash for m in previous.values() if m is not None}
        content_hash = True if force or len(recorded) != 1 else recorded.pop()
    data = load_dataset(data, transform) if isinstance(data, str) else data.with_transform(transform)
    data = data.with_content_hash(content_hash)
    if len(data) >= MAX_SAMPLES:
        raise BadInput(f"at most {MAX_SAMPLES - 1} samples per atlas")
    if content_hash:
        known = next((out / SAMPLES for out in outs if (out / SAMPLES).is_file()), None)
        data.hash_contents(known=data.samples if data.hashed else known, progress=progress)
    return data


def candidate_layers(model: LoadedModel, layers: Sequence[LayerInfo] | Sequence[str] | None,
                     options: RecordOptions) -> tuple[list[LayerInfo], set[str], list[str] | None]:
    """(the layers to check, the names among them the user gave by hand, the name patterns given): ``LayerInfo`` s
    as given, or the model's layers matching the names / globs of ``layers`` (else of ``options.layers``; None:
    every analysable layer of ``options.types`` but ``options.exclude`` and, unless ``options.keep_first_last``,
    the first and last). A name ``NAME@i`` picks one call of a module that runs several times per forward."""
    if layers is not None and not all(isinstance(item, str) for item in layers):
        # a list of LayerInfo (enumerate_units') names no layer by hand
        return [item for item in layers if isinstance(item, LayerInfo)], set(), None
    include = [str(item) for item in layers] if layers is not None else options.layers
    modules = list(dict.fromkeys(split_call(p)[0] for p in include)) if include is not None else None
    infos = enumerate_units(model.model, types=options.types, include=modules, exclude=options.exclude,
                            skip_first_last=not options.keep_first_last)
    return infos, explicit_names(include), list(include) if include is not None else None


def select_layers(model: LoadedModel, layers: Sequence[LayerInfo] | Sequence[str] | None,
                  options: RecordOptions) -> list[LayerInfo]:
    """The layers the pass records (``candidate_layers``), checked by one small forward (``check.check_layers``).

    Layers the pass cannot record raise one error listing them all; layers it leaves out (never run, constant,
    repeated with ``options.repeated="skip"``) are listed in one warning. Nothing of the dataset is read."""
    infos, named, include = candidate_layers(model, layers, options)
    check = check_layers(model, infos, options.repeated, options.spatial, options.tokens)
    return settle(check, named, include, options.exclude)
