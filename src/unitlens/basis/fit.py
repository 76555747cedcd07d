"""``fit_basis(atlas, layer, name, options)``: stream a layer's activations, fit a basis, store it in the atlas.

Everything that can be checked cheaply is checked before the model runs: the layer (a recorded layer of the
atlas, with finite activations in the record pass), the name (free, or ``force``), the kind's options and a
user matrix's shape. The activations are read once into ``Samples`` (bounded buffer, see
``unitlens.basis.activations``), the basis is fitted, its metrics are measured in one more pass, and only a basis
with finite tensors and features is written — under the atlas's write lock, stamped with ``atlas.identity()``.
Replacing a basis (``force``) also removes its recorded derived layer, whose features no longer match it, with every
result derived from it (``Atlas.remove_layers``), before the new basis is written.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unitlens.atlas.atlas import Atlas
from unitlens.basis.activations import LayerStream, Samples
from unitlens.basis.defaults import BATCH_SIZE, BUFFER_MB, POSITIONS_DEFAULT, RESERVOIR
from unitlens.basis.kinds import FitOptions, fit_encoder, load_matrix
from unitlens.basis.metrics import fit_metrics
from unitlens.basis.store import Basis, basis_path, check_name, derived_layer, exists, remove_basis, save_basis
from unitlens.errors import BadInput, BasisError


@dataclass
class FitResult:
    """A stored basis, its fit metrics, and how the fit went."""

    basis: Basis
    metrics: dict
    seconds: float
    cached: bool  # whether all samples fitted the buffer (else every pass streamed the model again)
    replaced: bool = False


def _refuse_existing(atlas: Atlas, layer: str, name: str, force: bool) -> None:
    recorded = derived_layer(layer, name) in atlas.derived_layers
    if (exists(atlas, layer, name) or recorded) and not force:
        raise BasisError(f"layer {layer} of atlas {atlas.path} already has a basis '{name}'; choose another --name, "
                         "or --force to replace it (its recorded features and every result derived from them are "
                         "removed with it)")


def fit_basis(atlas: Atlas | str | Path, layer: str, name: str, options: FitOptions, positions: str = POSITIONS_DEFAULT,
              model: Any = None, batch_size: int = BATCH_SIZE, buffer_mb: float = BUFFER_MB,
              reservoir: int = RESERVOIR, force: bool = False, progress: bool = True,
              samples: Samples | None = None) -> FitResult:
    """Fit basis ``name`` of kind ``options.kind`` on ``layer`` of ``atlas`` and store it (see the module doc).

    ``model``: the atlas's model as a ``LoadedModel`` (loaded from the manifest, weights hash checked, when None).
    ``positions``: ``spatial`` (every position / token is a sample) or ``image`` (the record pass's reduction).
    ``samples``: ``Samples`` already read from ``read_samples(atlas, layer, positions, ...)``, to fit several
    bases of one layer without streaming the model again for each.
    """
    t0 = time.perf_counter()
    atlas = Atlas.open(atlas)
    check_name(name)
    _refuse_existing(atlas, layer, name, force)
    if samples is None:  # opening the stream checks the layer; the model runs only when Samples reads it
        stream = LayerStream(atlas, layer, positions, model=model, batch_size=batch_size, device=options.device)
    else:
        stream = samples.stream
        if getattr(stream, "layer", layer) != layer or getattr(stream, "positions", positions) != positions:
            raise BadInput(f"the samples given are of layer {stream.layer} ({stream.positions} positions), not "
                           f"{layer} ({positions})")
    matrix = load_matrix(options.matrix, stream.width, layer, options.nonlinearity, options.k) \
        if options.kind == "file" and options.matrix is not None else None
    if options.kind == "nmf":
        units = atlas.units()
        low = float(units.loc[units["layer"] == layer, "min"].min())
        if low < 0:  # some images are below 0 on average: some positions are too
            raise BasisError(f"nmf needs non-negative activations, but layer {layer} reaches {low:.4g}; use a layer "
                             "after a ReLU, or another kind (pca, ica, sae-topk)")
    if samples is None:
        samples = Samples(stream, buffer_bytes=int(buffer_mb * 2**20), reservoir=reservoir, seed=options.seed,
                          progress=progress)
    fitted = fit_encoder(samples, options, progress=progress, matrix=matrix)
    bad = fitted.encoder.nonfinite()
    if bad:
        raise BasisError(f"the {options.kind} fit of layer {layer} diverged ({', '.join(bad)} hold NaN or inf), so "
                         "nothing was stored; for an SAE lower --lr or change --seed")
    metrics = fit_metrics(fitted.encoder, samples, device=options.device, progress=progress)
    meta = {
        "name": name, "layer": layer, "kind": options.kind, "positions": positions,
        "features": fitted.encoder.features, "channels": stream.width, "options": options.as_dict(),
        "fit": fitted.info, "metrics": metrics, "identity": atlas.identity(),
        "samples": {"n": samples.n, "cached": samples.cached is not None,
                    "buffer_mb": round(samples.buffer_bytes / 2**20, 3), "spatial": getattr(stream, "spatial", None),
                    "tokens": getattr(stream, "tokens", None)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.perf_counter() - t0, 3),
        "versions": {"torch": torch.__version__, "python": platform.python_version(), **_library_versions()},
    }
    basis = Basis(name, fitted.encoder, meta)
    replaced = False
    with atlas.writing("basis fit"):
        atlas = Atlas(atlas.path)  # the manifest as it is now, under the lock
        _refuse_existing(atlas, layer, name, force)  # again under the lock: another process may have written it
        if basis.derived_layer in atlas.derived_layers:  # its features and all results derived from them go first
            atlas.remove_layers([basis.derived_layer], "basis fit")
            replaced = True
        if exists(atlas, layer, name) or basis_path(atlas, layer, name).is_dir():
            remove_basis(atlas, layer, name)  # a damaged basis.json is replaced like any other
            replaced = True
        save_basis(atlas, basis)
    return FitResult(basis, metrics, time.perf_counter() - t0, samples.cached is not None, replaced)


def read_samples(atlas: Atlas | str, layer: str, positions: str = POSITIONS_DEFAULT, model: Any = None,
                 batch_size: int = BATCH_SIZE, buffer_mb: float = BUFFER_MB, reservoir: int = RESERVOIR,
                 seed: int = 0, device=None, progress: bool = True) -> Samples:
    """Read ``layer``'s activations once (``LayerStream`` into ``Samples``), to give ``fit_basis`` for several fits."""
    stream = LayerStream(atlas, layer, positions, model=model, batch_size=batch_size, device=device)
    return Samples(stream, buffer_bytes=int(buffer_mb * 2**20), reservoir=reservoir, seed=seed, progress=progress)


def _library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for package in ("unitlens", "scikit-learn", "overcomplete"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out
