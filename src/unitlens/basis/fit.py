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

from unitlens import notebook
from unitlens.atlas.atlas import Atlas
from unitlens.basis.activations import LayerStream, Samples
from unitlens.basis.kinds import fit_encoder, load_matrix
from unitlens.basis.metrics import fit_metrics
from unitlens.basis.options import BasisOptions
from unitlens.basis.store import Basis, basis_path, check_name, derived_layer, exists, remove_basis, save_basis
from unitlens.errors import BadInput, BasisError
from unitlens.options import takes_options


@dataclass
class FitResult:
    """A stored basis, its fit metrics, and how the fit went."""

    basis: Basis
    metrics: dict
    seconds: float
    cached: bool  # whether all samples fitted the buffer (else every pass streamed the model again)
    replaced: bool = False

    def _repr_html_(self) -> str:
        facts = {"kind": self.basis.kind, "positions": self.basis.positions, "features": self.basis.encoder.features,
                 **{k: self.metrics.get(k) for k in ("r2", "explained_variance", "dead_features", "mean_active")},
                 "seconds": round(self.seconds, 1), "replaced an earlier basis": self.replaced}
        return notebook.header(f"basis {self.basis.derived_layer}", facts)


def _refuse_existing(atlas: Atlas, layer: str, name: str, force: bool) -> None:
    recorded = derived_layer(layer, name) in atlas.derived_layers
    if (exists(atlas, layer, name) or recorded) and not force:
        raise BasisError(f"layer {layer} of atlas {atlas.path} already has a basis '{name}'; choose another --name, "
                         "or --force to replace it (its recorded features and every result derived from them are "
                         "removed with it)")


@takes_options(BasisOptions)
def fit_basis(atlas: Atlas | str | Path, layer: str, name: str, options: BasisOptions | None = None, *,
              model: Any = None, samples: Samples | None = None, progress: bool = True) -> FitResult:
    """Fit basis ``name`` of kind ``options.kind`` on ``layer`` of ``atlas`` and store it (see the module doc).

    Parameters
    ----------
    atlas
        The atlas (a path or an ``Atlas``); its record run must be complete.
    layer
        A recorded layer of the atlas (not a derived one).
    name
        The basis's name; its features become layer ``LAYER::NAME`` when recorded (``record_bases``).
    options
        A ``BasisOptions``; any of its fields may also be given as a keyword argument (see below).
    model
        The atlas's model as a ``LoadedModel`` (default: loaded from the manifest, weights hash checked).
    samples
        ``Samples`` already read by ``read_samples(atlas, layer, ...)``, to fit several bases of one layer without
        streaming the model again for each (``options.positions`` must be theirs).
    progress
        Show progress bars.

    Returns
    -------
    FitResult
        The stored ``Basis``, its fit metrics, seconds, whether the samples fitted the buffer, whether an earlier
        basis of that name was replaced.
    """
    options = options or BasisOptions()
    t0 = time.perf_counter()
    atlas = Atlas.open(atlas)
    check_name(name)
    _refuse_existing(atlas, layer, name, options.force)
    positions = options.positions
    if samples is None:  # opening the stream checks the layer; the model runs only when Samples reads it
        stream = _stream(atlas, layer, options, model)
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
        samples = _samples(stream, options, progress)
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
        _refuse_existing(atlas, layer, name, options.force)  # again under the lock: another process may have written it
        if basis.derived_layer in atlas.derived_layers:  # its features and all results derived from them go first
            atlas.remove_layers([basis.derived_layer], "basis fit")
            replaced = True
        if exists(atlas, layer, name) or basis_path(atlas, layer, name).is_dir():
            remove_basis(atlas, layer, name)  # a damaged basis.json is replaced like any other
            replaced = True
        save_basis(atlas, basis)
    return FitResult(basis, metrics, time.perf_counter() - t0, samples.cached is not None, replaced)


def _stream(atlas: Atlas, layer: str, options: BasisOptions, model: Any) -> LayerStream:
    return LayerStream(atlas, layer, options.positions, model=model, batch_size=options.batch_size,
                       device=options.device, channels_last=options.channels_last)


def _samples(stream: LayerStream, options: BasisOptions, progress: bool) -> Samples:
    return Samples(stream, buffer_bytes=int(options.buffer_mb * 2**20), reservoir=options.reservoir,
                   seed=options.seed, progress=progress)


@takes_options(BasisOptions)
def read_samples(atlas: Atlas | str | Path, layer: str, options: BasisOptions | None = None, *, model: Any = None,
                 progress: bool = True) -> Samples:
    """Read ``layer``'s activations once, to give ``fit_basis`` for several fits of that layer.

    Parameters
    ----------
    atlas, layer
        As for ``fit_basis``.
    options
        The ``BasisOptions`` that say how to read them (positions, batch size, buffer, reservoir, seed, device).
    model
        The atlas's model as a ``LoadedModel`` (default: loaded from the manifest).
    progress
        Show a progress bar.

    Returns
    -------
    Samples
        The activations (held in the buffer while they fit it, else streamed again on each pass).
    """
    options = options or BasisOptions()
    return _samples(_stream(Atlas.open(atlas), layer, options, model), options, progress)


def _library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for package in ("unitlens", "scikit-learn", "overcomplete"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out
