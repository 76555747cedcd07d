"""``fit_encoder(samples, options)``: every basis kind, fitted on ``Samples`` and exported as one ``Encoder``.

- ``sae-topk``, ``sae-batchtopk``, ``sae-jumprelu``, ``sae-archetypal``: sparse autoencoders of the maintained
  ``overcomplete`` library (``TopKSAE``, ``BatchTopKSAE``, ``JumpSAE``, ``RATopKSAE``), trained with its
  ``train_sae`` loop and Adam on (x − mean) / scale (scale: root mean per-channel variance, so the learning
  rate means the same on every layer). The dictionary starts at random samples of the data (normalised) and the
  encoder at the dictionary's transpose (Gao et al. 2024); TopK-type SAEs use the auxiliary loss that revives
  dead features, the JumpReLU SAE MSE + L1. The scale and mean are folded into the stored encoder and decoder.
- ``pca``: scikit-learn ``PCA`` when the samples fit the buffer, else ``IncrementalPCA`` streamed in blocks.
- ``ica``: scikit-learn ``FastICA`` on the buffered samples, or on the seeded reservoir when they do not fit
  (FastICA has no streaming variant).
- ``nmf``: scikit-learn ``NMF`` on the buffered samples, else ``MiniBatchNMF`` streamed in blocks; needs
  non-negative activations. Features are the non-negative codes (not linear in the activations).
- ``random``: seeded random orthogonal directions (Haar: QR of a Gaussian matrix); beyond the layer's width,
  further independent orthogonal blocks.
- ``file``: a user's matrix (``load_matrix``), e.g. an SAE trained elsewhere.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unitlens.basis.activations import Samples
from unitlens.basis.defaults import (
    AUX_PENALTY,
    JUMPRELU_PENALTY,
    MAX_EPOCHS,
    SAE_KINDS,
    STEPS,
    K,
)
from unitlens.basis.encoder import Encoder, least_squares_decoder
from unitlens.basis.options import BasisOptions
from unitlens.basis.sae_library import overcomplete_sae
from unitlens.errors import BadInput, BasisError, MissingFile
from unitlens.registry import Registry
from unitlens.runtime import Progress, pick_device


@dataclass
class Fitted:
    """A fitted encoder and what the fit reports about itself (library, estimator, steps, notes)."""

    encoder: Encoder
    info: dict = field(default_factory=dict)


def fit_encoder(samples: Samples, options: BasisOptions, progress: bool = True,
                matrix: Encoder | None = None) -> Fitted:
    """Fit ``options.kind`` on ``samples`` (``matrix``: the loaded user matrix of kind ``file``)."""
    if options.kind == "file":
        if matrix is None:
            raise BadInput("kind file needs the loaded matrix (load_matrix)")
        return Fitted(matrix, {"source": str(options.matrix)})
    C = samples.width
    features = options.features_for(C)
    if options.kind in ("pca", "ica", "nmf") and features > min(C, samples.n):
        raise BadInput(f"{options.kind} gives at most min(channels, samples) = {min(C, samples.n)} features "
                       f"here, not {features}; lower --features")
    return FITTERS.get(options.kind)(samples, options, features, progress)


# ------------------------------------------------------------------------------------------ sparse autoencoders
class _Epoch:
    """One epoch of normalised, shuffled minibatches for ``train_sae`` (iterated once per epoch)."""

    def __init__(self, samples: Samples, batch_size: int, center: torch.Tensor, scale: float, device, bar: Progress,
                 seed: int):
        self.samples, self.batch_size, self.center, self.scale = samples, batch_size, center, scale
        self.device, self.bar = device, bar
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        for x in self.samples.minibatches(self.batch_size, drop_last=True, generator=self.generator):
            yield ((x - self.center) / self.scale).to(self.device)
            self.bar.advance(1)


def _fit_sae(samples: Samples, options: BasisOptions, features: int, progress: bool) -> Fitted:
    sae = overcomplete_sae()
    from overcomplete.sae.losses import mse_l1, top_k_auxiliary_loss

    C, kind = samples.width, options.kind
    k = min(options.k, features)
    batch = min(options.sae_batch_size, samples.n)
    if 2 * batch > samples.buffer_rows:
        raise BadInput(f"the buffer holds {samples.buffer_rows} samples, fewer than two SAE batches of {batch}; "
                       "raise --buffer-mb or lower --sae-batch-size")
    device = pick_device(options.device)
    center, scale = samples.mean.float(), samples.scale
    pool = (samples.reservoir - center) / scale
    steps = samples.n // batch
    epochs = options.epochs or min(MAX_EPOCHS, math.ceil(STEPS / steps))
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(options.seed)  # overcomplete initialises from the global generator
        order = torch.randperm(pool.shape[0])
        init = F.normalize(pool[order[:features]], dim=1) if pool.shape[0] >= features else None
        params = {"initializer": init.to(device)} if init is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # overcomplete copy-constructs the initialiser
            if kind == "sae-topk":
                model = sae.TopKSAE(C, features, top_k=k, dictionary_params=params, device=device)
            elif kind == "sae-batchtopk":  # top_k counts codes of the whole batch
                model = sae.BatchTopKSAE(C, features, top_k=k * batch, dictionary_params=params, device=device)
            elif kind == "sae-jumprelu":
                model = sae.JumpSAE(C, features, dictionary_params=params, device=device)
            else:
                points = pool[order[:max(features, 1)]].to(device)
                model = sae.RATopKSAE(C, features, points=points, top_k=k, device=device)
        model.untied(bias=True, copy_from_dictionary=True)
        loss = partial(mse_l1, penalty=JUMPRELU_PENALTY) if kind == "sae-jumprelu" else \
            partial(top_k_auxiliary_loss, penalty=AUX_PENALTY)
        optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
        with Progress(f"training {kind} ({features} features)", steps * epochs, progress, unit="step") as bar:
            sae.train_sae(model, _Epoch(samples, batch, center, scale, device, bar, options.seed), loss, optimizer,
                          nb_epochs=epochs, monitoring=0, device=device)
    model.eval()
    with torch.no_grad():
        weight = (model.encoder.weight / scale).detach().float().cpu()
        bias = model.encoder.bias.detach().float().cpu()
        decoder = (model.get_dictionary() * scale).detach().float().cpu()
        if kind == "sae-batchtopk":
            running = model.running_threshold.detach().float().cpu()
            act = {"activation": "threshold", "threshold": running.expand(features).clone()}
        elif kind == "sae-jumprelu":
            act = {"activation": "threshold", "threshold": torch.exp(model.thresholds).detach().float().cpu()}
        else:
            act = {"activation": "topk", "k": k}
    encoder = Encoder(weight=weight, bias=bias, center=center.clone(), decoder=decoder, decoder_bias=center.clone(),
                      **act)
    info = {"library": f"overcomplete {version('overcomplete')}", "model": type(model).__name__, "k": k,
            "epochs": epochs, "lr": options.lr, "batch_size": batch, "steps": steps * epochs,
            "scale": scale, "init": "data samples" if init is not None else "xavier",
            "loss": "mse + l1" if kind == "sae-jumprelu" else "mse + topk auxiliary"}
    return Fitted(encoder, info)


# ------------------------------------------------------------------------------------------ scikit-learn
def _array(x: torch.Tensor) -> np.ndarray:
    """The samples as a float32 array sharing their memory (scikit-learn keeps float32: no copy of the buffer)."""
    return x.float().contiguous().numpy()


def _block_rows(samples: Samples, features: int) -> int:
    """Samples per streamed ``partial_fit``: 4096, fewer when the buffer is smaller, never fewer than the features."""
    return max(features, min(4096, samples.buffer_rows))


def _fit_pca(samples: Samples, options: BasisOptions, features: int, progress: bool) -> Fitted:
    from sklearn.decomposition import PCA, IncrementalPCA

    if samples.cached is not None:
        est = PCA(n_components=features, svd_solver="full", random_state=options.seed).fit(_array(samples.cached))
    else:
        est = IncrementalPCA(n_components=features)
        with Progress("incremental PCA", None, progress, unit="block") as bar:
            for block in samples.blocks(_block_rows(samples, features)):
                est.partial_fit(_array(block))
                bar.advance(1)
    components = torch.from_numpy(est.components_).float()
    mean = torch.from_numpy(est.mean_).float()
    info = {"estimator": type(est).__name__, "explained_variance_ratio": float(est.explained_variance_ratio_.sum())}
    return Fitted(Encoder(weight=components, center=mean, decoder=components.clone(), decoder_bias=mean.clone()), info)


def _fit_ica(samples: Samples, options: BasisOptions, features: int, progress: bool) -> Fitted:
    from sklearn.decomposition import FastICA

    data = samples.cached if samples.cached is not None else samples.reservoir
    est = FastICA(n_components=features, random_state=options.seed, whiten="unit-variance", max_iter=400)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(_array(data))
    notes = [str(w.message) for w in caught if "converge" in str(w.message).lower()]
    mean = torch.from_numpy(est.mean_).float()
    info = {"estimator": "FastICA", "samples_used": int(data.shape[0]),
            "on": "all samples" if samples.cached is not None else "reservoir", "n_iter": int(est.n_iter_),
            "notes": notes}
    encoder = Encoder(weight=torch.from_numpy(est.components_).float(), center=mean,
                      decoder=torch.from_numpy(est.mixing_.T.copy()).float(), decoder_bias=mean.clone())
    return Fitted(encoder, info)


def _fit_nmf(samples: Samples, options: BasisOptions, features: int, progress: bool) -> Fitted:
    from sklearn.decomposition import NMF, MiniBatchNMF

    low = float(samples.min.min())
    if low < 0:
        raise BasisError(f"nmf needs non-negative activations, but this layer's reach {low:.4g}; use a layer after a "
                         "ReLU, or another kind (pca, ica, sae-topk)")
    if samples.cached is not None:
        est = NMF(n_components=features, init="nndsvda", random_state=options.seed, max_iter=400)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(_array(samples.cached))
    else:
        est = MiniBatchNMF(n_components=features, random_state=options.seed, max_iter=400)
        with warnings.catch_warnings(record=True) as caught, Progress("mini-batch NMF", None, progress,
                                                                      unit="block") as bar:
            warnings.simplefilter("always")
            for block in samples.blocks(_block_rows(samples, features)):
                est.partial_fit(_array(block))
                bar.advance(1)
    H = torch.from_numpy(est.components_).float()
    opts = {"solver": "cd", "beta_loss": "frobenius", "tol": float(est.tol), "max_iter": int(est.max_iter)}
    info = {"estimator": type(est).__name__, "notes": [str(w.message) for w in caught
                                                       if "converge" in str(w.message).lower()]}
    return Fitted(Encoder(weight=H, activation="nmf", decoder=H.clone(), options=opts), info)


# ------------------------------------------------------------------------------------------ random directions
def random_directions(channels: int, features: int, seed: int) -> torch.Tensor:
    """(features, channels) seeded random orthonormal rows (Haar); independent orthogonal blocks beyond width."""
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(features / channels)):
        q, r = torch.linalg.qr(torch.randn(channels, channels, generator=gen, dtype=torch.float64))
        blocks.append((q * torch.sign(torch.diagonal(r))).T)  # the sign fix makes the draw Haar-uniform
    return torch.cat(blocks)[:features].float()


def _fit_random(samples: Samples, options: BasisOptions, features: int, progress: bool) -> Fitted:
    weight = random_directions(samples.width, features, options.seed)
    return Fitted(Encoder(weight=weight, decoder=least_squares_decoder(weight)), {"seed": options.seed})


# every kind but "file" (a user's matrix, loaded by load_matrix): fit(samples, options, features, progress)
FITTERS: Registry[Callable[[Samples, BasisOptions, int, bool], Fitted]] = Registry("basis kind")
for _kind in SAE_KINDS:
    FITTERS.register(_kind, _fit_sae)
FITTERS.register("pca", _fit_pca)
FITTERS.register("ica", _fit_ica)
FITTERS.register("nmf", _fit_nmf)
FITTERS.register("random", _fit_random)


# ------------------------------------------------------------------------------------------ user matrices
MATRIX_KEYS = ("weight", "bias", "center", "threshold", "decoder", "decoder_bias")


def _read_matrix(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from unitlens.atlas.files import read_tensors

            found: Any = read_tensors(path)
        elif suffix in (".pt", ".pth"):
            found = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".npy":
            found = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            raise BadInput(f"{path}: a matrix file must be .safetensors, .pt or .npy")
    except BadInput:
        raise
    except Exception as err:  # a damaged or foreign file of any kind: name it
        raise BadInput(f"cannot read matrix file {path}: {err}") from err
    if isinstance(found, torch.Tensor):
        return {"weight": found}
    if isinstance(found, dict) and all(isinstance(v, torch.Tensor) for v in found.values()):
        unknown = sorted(set(found) - set(MATRIX_KEYS))
        if unknown or "weight" not in found:
            raise BadInput(f"{path} holds tensors {sorted(found)}; a basis file holds 'weight' (features, channels) "
                           f"and optionally {', '.join(MATRIX_KEYS[1:])}")
        return dict(found)
    raise BadInput(f"{path} holds a {type(found).__name__}, not a tensor or a dict of tensors")


def load_matrix(path: str | Path, channels: int, layer: str, nonlinearity: str = "none", k: int = K) -> Encoder:
    """A user's linear encoder f = act((x − center) · weightᵀ + bias) from a file, checked against the layer.

    The file holds ``weight`` of shape (features, channels) — a bare tensor (``.npy``, ``.pt``) or a dict with
    that key and optional ``bias`` (features,), ``center`` (channels,), ``threshold`` (features,), ``decoder``
    (features, channels) and ``decoder_bias`` (channels,). ``nonlinearity``: none, relu, topk (``k``) or
    threshold (needs ``threshold``). Without a decoder a linear encoder gets the least-squares one.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"matrix file {path} does not exist")
    tensors = {n: t.float() for n, t in _read_matrix(path).items()}
    weight = tensors.pop("weight")
    if weight.ndim != 2 or weight.shape[1] != channels:
        hint = "; it looks transposed: save its transpose" if weight.ndim == 2 and weight.shape[0] == channels else ""
        raise BadInput(f"matrix {path} has shape {tuple(weight.shape)}, but layer {layer} gives activations of shape "
                       f"(N, {channels}): a basis matrix must be (features, {channels}){hint}")
    bad = [n for n, t in {"weight": weight, **tensors}.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise BasisError(f"matrix {path}: {', '.join(bad)} hold(s) NaN or inf; nothing was stored")
    if nonlinearity == "threshold" and "threshold" not in tensors:
        raise BadInput(f"--nonlinearity threshold needs a 'threshold' tensor (features,) in {path}")
    if nonlinearity == "topk" and not 0 < k <= weight.shape[0]:
        raise BadInput(f"--nonlinearity topk needs 1 <= --k <= {weight.shape[0]} (the matrix's features), got {k}")
    if "decoder" not in tensors and nonlinearity == "none":  # x̂ = (f − bias) · D + center, D = (Wᵀ)⁺
        tensors["decoder"] = least_squares_decoder(weight)
        if "bias" in tensors or "center" in tensors:
            offset = -(tensors["bias"] @ tensors["decoder"]) if "bias" in tensors else torch.zeros(channels)
            tensors.setdefault("decoder_bias", offset + tensors.get("center", torch.zeros(channels)))
    try:
        return Encoder(weight=weight, activation=nonlinearity, k=k if nonlinearity == "topk" else None,
                       **tensors)  # type: ignore[arg-type]
    except BadInput as err:
        raise BadInput(f"matrix {path}: {err}") from err
