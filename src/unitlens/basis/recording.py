"""``record_bases(atlas, names)``: the features of fitted bases as units of derived layers, in one streaming pass.

One forward pass over the atlas's images (stopped after the deepest parent layer) feeds every basis: its encoder
is one matrix product per batch on the parent layer's output — on the per-image vector (``image`` bases) or on
every position, then reduced over positions like the record pass reduces channels (``spatial`` bases; at most
``ENCODE_FLOATS`` features are held at once, and at least one image). The features go into the record pass's own
streaming state (``unitlens.recording.state.LayerState``, same k, same total order), and the derived layer
``<layer>::<name>`` is written with the record pass's row and exemplar builders, so MIS, the lens and the explorer
read it like any layer. The pass checkpoints every ``checkpoint_every`` images and resumes when run again.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from unitlens import notebook
from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import read_tensors, write_tensors
from unitlens.basis.activations import model_outputs, position_reduction, positions_of
from unitlens.basis.defaults import ENCODE_FLOATS
from unitlens.basis.encoder import Encoder
from unitlens.basis.options import BasisRecordOptions
from unitlens.basis.store import Basis, derived_layer, load_basis, resolve
from unitlens.errors import BadInput, BasisError
from unitlens.options import takes_options
from unitlens.recording.defaults import MERGE_EVERY
from unitlens.recording.folder import exemplar_tensors, unit_rows
from unitlens.recording.reduce import reduce_output
from unitlens.recording.state import LayerState
from unitlens.runtime import first_tensor, pick_device
from unitlens.zoo.units import LayerInfo, channel_dim_of

STATE_FILE = ".record-state.safetensors"  # inside basis/; basis names cannot start with '.'


@dataclass
class BasisRecordResult:
    """The derived layers a record call wrote, and its counts and speed."""

    layers: list[str]
    n_images: int
    seconds: float
    resumed_from: int = 0
    replaced: list[str] | None = None

    def _repr_html_(self) -> str:
        facts = {"layers": ", ".join(self.layers), "images": self.n_images, "seconds": round(self.seconds, 1),
                 "resumed from image": self.resumed_from, "replaced": ", ".join(self.replaced or []) or "none"}
        return notebook.header("recorded basis features", facts)


def basis_features(output: torch.Tensor, encoder: Encoder, positions: str, channel_dim: int, spatial: str,
                   tokens: str) -> torch.Tensor:
    """One parent-layer output (B, ...) -> the basis's per-image features (B, F), reduced like the record pass."""
    out = first_tensor(output)
    if positions == "image":
        return encoder.encode(reduce_output(out, channel_dim_of(out, channel_dim), spatial, tokens))
    rows = positions_of(out, channel_dim)  # (B, P, C)
    B, P, C = rows.shape
    how = position_reduction(out, channel_dim, spatial, tokens)
    per = max(1, ENCODE_FLOATS // max(1, P * encoder.features))
    parts = [reduce_output(encoder.encode(rows[s:s + per].reshape(-1, C)).view(-1, P, encoder.features), -1,
                           tokens=how) for s in range(0, B, per)]
    return torch.cat(parts)


def _check(atlas: Atlas, bases: list[Basis], force: bool) -> None:
    for b in bases:
        if b.derived_layer in atlas.derived_layers and not force:
            raise BasisError(f"basis '{b.name}' is already recorded as layer {b.derived_layer} of {atlas.path}; use "
                             "--force to record it again")
        parent = atlas.layer(b.layer)
        if parent.width and parent.width != b.encoder.channels:
            raise BasisError(f"basis '{b.name}' maps {b.encoder.channels} channels, but layer {b.layer} of "
                             f"{atlas.path} has {parent.width}; fit it again with --force")


@takes_options(BasisRecordOptions)
def record_bases(atlas: Atlas | str | Path, names: list[str], options: BasisRecordOptions | None = None, *,
                 model: Any = None, progress: bool = True) -> BasisRecordResult:
    """Record the features of bases ``names`` as derived layers of ``atlas`` (see the module docstring).

    Parameters
    ----------
    atlas
        The atlas (a path or an ``Atlas``) with the fitted bases.
    names
        ``<layer>::<name>``, or a plain name for that basis on every layer that has one.
    options
        A ``BasisRecordOptions``; any of its fields may also be given as a keyword argument (see below). A basis
        already recorded needs ``force`` (its old layer, with every result derived from it, is replaced at the end
        of the pass).
    model
        The atlas's model as a ``LoadedModel`` (default: loaded from the manifest).
    progress
        Show a progress bar.

    Returns
    -------
    BasisRecordResult
        The derived layers written, images, seconds, where a resumed pass started, the layers replaced.
    """
    options = options or BasisRecordOptions()
    t0 = time.perf_counter()
    atlas = Atlas.open(atlas)
    atlas.require_complete()
    if not names:
        raise BadInput("name at least one basis to record (unitlens basis list shows them)")
    wanted = dict.fromkeys(derived_layer(*hit) for n in names for hit in resolve(atlas, n))
    bases = [load_basis(atlas, n) for n in wanted]
    _check(atlas, bases, options.force)
    replaced = [b.derived_layer for b in bases if b.derived_layer in atlas.derived_layers]
    model = model if model is not None else atlas.load_model()
    config = atlas.manifest.config
    k, spatial, tokens = config.k, config.spatial, config.tokens
    samples = atlas.samples()
    ids = samples.loc[~samples["skipped"].astype(bool), "id"].astype(int).tolist()
    position_of = {i: p for p, i in enumerate(ids)}
    dev = pick_device(options.device)
    encoders = {b.derived_layer: b.encoder.to(dev) for b in bases}
    parents = list(dict.fromkeys(b.layer for b in bases))
    cdims = {name: atlas.layer(name).channel_dim for name in parents}
    key = json.dumps({b.derived_layer: [b.meta.get("created"), b.encoder.features] for b in bases} | {"k": k},
                     sort_keys=True)
    with atlas.writing("basis record"):
        state_path = atlas.derived_path("basis", STATE_FILE)
        states: dict[str, LayerState] = {}
        start = 0
        if state_path.is_file():
            from safetensors import safe_open

            with safe_open(str(state_path), "pt") as f:
                meta = f.metadata()
            if meta.get("key") == key:
                saved = read_tensors(state_path)
                for b in bases:
                    states[b.derived_layer] = LayerState.from_state_dict(
                        {f: saved[f"{b.derived_layer}/{f}"] for f in LayerState.FIELDS}, k, dev, MERGE_EVERY)
                start = int(meta["position"])
        position, since = start, 0

        def checkpoint() -> None:
            tensors = {f"{n}/{f}": v for n, st in states.items() for f, v in st.state_dict().items()}
            write_tensors(state_path, tensors, {"key": key, "position": str(position)})

        try:
            for batch_ids, outputs in model_outputs(model, atlas.dataset(), ids[start:], parents, options.batch_size,
                                                    dev, progress, "recording basis features", len(ids), start,
                                                    options.channels_last):
                id_t = torch.tensor(batch_ids, device=dev)
                for b in bases:
                    with torch.inference_mode():
                        f = basis_features(outputs[b.layer], encoders[b.derived_layer], b.positions, cdims[b.layer],
                                           spatial, tokens)
                    if b.derived_layer not in states:
                        states[b.derived_layer] = LayerState(f.shape[1], k, dev, MERGE_EVERY)
                    states[b.derived_layer].update(f, id_t)
                done = position_of[batch_ids[-1]] + 1
                since += done - position
                position = done
                if since >= options.checkpoint_every and position < len(ids):
                    checkpoint()
                    since = 0
        except BaseException:
            if position > start and len(states) == len(bases):
                checkpoint()
            raise
        if len(states) < len(bases):
            raise BasisError(f"no image of atlas {atlas.path} could be read; nothing was recorded")
        _write(atlas, bases, states, options)
        state_path.unlink(missing_ok=True)
    return BasisRecordResult([b.derived_layer for b in bases], len(ids), time.perf_counter() - t0, start, replaced)


def _write(atlas: Atlas, bases: list[Basis], states: dict[str, LayerState], options: BasisRecordOptions) -> None:
    """Replace earlier recordings of these bases (their scores go with them) and add the derived layers."""
    stale = [b.derived_layer for b in bases if b.derived_layer in atlas.derived_layers]
    if stale:
        atlas.remove_layers(stale, "basis record")
    infos, rows, exemplars, about = [], [], {}, {}
    for b in bases:
        parent = atlas.layer(b.layer)
        st = states[b.derived_layer]
        info = LayerInfo(name=b.derived_layer, type="Basis", depth=parent.depth, rel_depth=parent.rel_depth,
                         width=st.width, rel_width=None, channel_dim=-1)
        infos.append(info)
        layer_exemplars = st.exemplars()
        rows.append(unit_rows(info, st, layer_exemplars))
        exemplars[info.name] = exemplar_tensors(layer_exemplars)
        about[info.name] = {"parent": b.layer, "basis": b.name, "kind": b.kind, "positions": b.positions,
                            "features": st.width, "linear": b.encoder.linear, "options": options.as_dict()}
    atlas.add_layers(infos, pd.concat(rows, ignore_index=True), exemplars, about, "basis record")
