"""``open_session(atlas, ...)``: what every relevance computation of an atlas needs, set up once — the atlas's model
(weights checked against the atlas), its LRP composite, the device, the dataset (the atlas's own or ``--data``),
the layers — plus the batched CRP loop and the top-5 prediction pass that picks the samples to explain.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from unitlens.atlas.atlas import Atlas
from unitlens.atlas.files import read_parquet, write_parquet
from unitlens.data.loading import load_batches
from unitlens.errors import CorruptFile, RelevanceError, UnitlensError
from unitlens.relevance.attribute import Attribution, target_relevance
from unitlens.relevance.composite import COMPOSITE_NAME, composite_for
from unitlens.runtime import Progress, pick_device, prepare_model

TOP = 5  # predictions kept per sample (the "top-5" sample rule)


@dataclass
class Session:
    atlas: Atlas
    loaded: Any  # unitlens.zoo.LoadedModel
    composite: Any
    device: torch.device
    dataset: Any  # unitlens.data.ImageDataset
    data_spec: str
    fingerprint: str
    ids: list[int]  # readable samples
    layers: dict[str, int]  # layer -> channel dim
    weights_hash: str = ""
    attribution: Any = None
    checked: bool = False
    conservation: dict[str, list[float]] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.atlas.derived_path("relevance")

    def describe(self) -> dict:
        """Provenance for the stored meta: composite, model weights, data."""
        from unitlens import __version__

        return {"composite": COMPOSITE_NAME, "canonizers": [type(c).__name__ for c in self.composite.canonizers],
                "model": self.atlas.manifest.config.model, "weights_hash": self.weights_hash,
                "data": self.data_spec, "dataset_fingerprint": self.fingerprint, "unitlens": __version__}


def open_session(atlas, layers=None, data=None, device=None, model=None, channels_last: bool = True) -> Session:
    """Load the atlas's model (or use ``model``; on ``device``, in channels-last memory order if
    ``channels_last``), its composite, and the data to explain."""
    from unitlens.data import load_dataset

    atlas = Atlas.open(atlas)
    atlas.require_complete()
    if model is None:
        try:
            model = atlas.load_model()
        except UnitlensError as err:
            raise RelevanceError(f"relevance needs the analysed model: {err}") from err
    composite = composite_for(model.model, f"model '{model.name}'")
    infos = atlas.select_layers(layers, derived=False)  # basis features have no LRP rules yet
    if data is None:
        samples = atlas.samples()
        dataset = atlas.dataset(model.transform)
        ids = samples.loc[~samples["skipped"].astype(bool), "id"].astype(int).tolist()
        spec, fingerprint = atlas.manifest.dataset.spec, atlas.manifest.dataset.fingerprint
    else:
        dataset = load_dataset(data, model.transform)
        ids = list(range(len(dataset)))
        spec, fingerprint = str(data), dataset.fingerprint()
    dev = pick_device(device)
    prepare_model(model.model, dev, channels_last)
    return Session(atlas=atlas, loaded=model, composite=composite, device=dev, dataset=dataset, data_spec=spec,
                   fingerprint=fingerprint, ids=ids, layers={i.name: i.channel_dim for i in infos},
                   weights_hash=model.weights_hash())


def top_predictions(session: Session, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """id, top5 (class indices), top5_logits of every readable sample; cached per dataset and weights."""
    path = session.folder / f"predictions_{session.fingerprint}_{session.weights_hash}.parquet"
    if path.is_file():
        try:
            return read_parquet(path)
        except CorruptFile as err:  # a cache: computed again
            warnings.warn(f"{err}; predicting again", stacklevel=2)
    rows = []
    net = session.loaded.model
    with Progress("predictions", len(session.ids), progress, unit="img") as bar, torch.inference_mode():
        for ids, x, _ in load_batches(session.dataset, session.ids, session.loaded.transform, batch_size,
                                      session.device, skipped=_warn_skipped):
            logits = net(x).float()
            val, idx = logits.topk(min(TOP, logits.shape[1]), dim=1)
            rows += [{"id": i, "top5": t, "top5_logits": v} for i, t, v in zip(ids, idx.tolist(), val.tolist())]
            bar.advance(len(ids))
    frame = pd.DataFrame(rows, columns=["id", "top5", "top5_logits"])
    write_parquet(path, frame)
    return frame


def _warn_skipped(sample_id: int, path, err: Exception) -> None:
    warnings.warn(f"skipped unreadable image {path} (sample {sample_id}): {err}", stacklevel=3)


def explain_batches(session: Session, ids: list[int], targets: list[int], batch_size: int, progress: bool,
                    on_batch: Callable[[list[int], torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], None],
                    label: str = "relevance") -> None:
    """Explain logit ``targets[i]`` of sample ``ids[i]`` in batches; ``on_batch(ids, targets, logits, {layer: R})``.

    The first batch is also run without the composite: canonizers must leave the model's output unchanged.
    """
    if session.attribution is None:
        session.attribution = Attribution(session.loaded.model, device=session.device)
    target_of = dict(zip(ids, targets))
    with Progress(label, len(ids), progress, unit="img") as bar:
        for chunk, x, _ in load_batches(session.dataset, ids, session.loaded.transform, batch_size,
                                        session.device, skipped=_warn_skipped):
            t = torch.tensor([target_of[i] for i in chunk], device=session.device)
            logits, rel = target_relevance(session.attribution, session.composite, x, t, session.layers)
            if not session.checked:
                _check_canonizers(session, x, logits)
            explained = logits.double().gather(1, t[:, None])[:, 0]
            for name, r in rel.items():
                session.conservation.setdefault(name, []).extend((r.sum(1) / explained).tolist())
            on_batch(chunk, t, logits, rel)
            bar.advance(len(chunk))


def _check_canonizers(session: Session, x: torch.Tensor, logits: torch.Tensor) -> None:
    with torch.no_grad():
        plain = session.loaded.model(x).float()
    gap = (plain - logits.float()).abs().max().item()
    scale = max(plain.abs().max().item(), 1.0)
    if gap > 1e-3 * scale:
        raise RelevanceError(f"the LRP canonizers changed the output of model '{session.loaded.name}' (max logit "
                             f"difference {gap:.3g}): its batch-norm / residual layout is not one they understand. "
                             "Pass your own zennit composite to the Python API")
    session.checked = True


def conservation_summary(session: Session) -> dict[str, float]:
    """Mean over explained samples of Σ_k R_k / explained logit, per layer (1 = conserved; below 1: relevance
    absorbed by positive biases on the way down; residual-branch layers carry only their branch's part)."""
    return {name: float(sum(v) / len(v)) for name, v in session.conservation.items() if v}
