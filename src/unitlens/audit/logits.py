"""``model_logits(model, images, ablate=...)``: a model's logits on a set of images, and with ``ablate`` also its
logits with some units replaced, from one pass over the data (each batch is run twice, hooks off and on).

Ablation is a forward hook on each named layer that replaces the given channels of its output, along the channel
dimension of ``unitlens.zoo.units.LayerInfo`` (1 for (B, C, ...) maps, -1 for (B, ..., C) outputs), by 0 or by
given values (e.g. each unit's mean activation, constant over space). It acts on the layer's output as the atlas
recorded it: when a batch norm follows (a conv's pre-BN output), 0 becomes the BN's shift, not 0.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from unitlens.audit.options import AuditTestOptions
from unitlens.errors import AuditError, BadInput
from unitlens.runtime import ForwardHooks, Progress, pick_device, prepare_model
from unitlens.zoo.units import channel_dim_of, enumerate_units


@dataclass
class Logits:
    """Logits (N, C) of N readable images (sample ``ids`` and folder ``labels``), and with units ablated."""

    ids: torch.Tensor
    labels: list[str]
    plain: torch.Tensor
    ablated: torch.Tensor | None = None
    skipped: list[str] = field(default_factory=list)

    def of(self, ablated: bool = False) -> torch.Tensor:
        out = self.ablated if ablated else self.plain
        if out is None:
            raise BadInput("these logits were computed without ablated units")
        return out

    def rank(self, index: int, ablated: bool = False) -> torch.Tensor:
        """(N,) rank of class ``index`` per image: 1 = the top prediction (ties count in the class's favour)."""
        logits = self.of(ablated)
        return (logits > logits[:, index:index + 1]).sum(1) + 1

    def stats(self, index: int, ablated: bool = False) -> dict:
        """Class ``index``: images, logit mean and std, mean rank, top-1 and top-5 rates (top-k: k = min(5, C))."""
        scores = self.of(ablated)[:, index].double()
        rank = self.rank(index, ablated).double()
        k = min(5, self.plain.shape[1])
        return {"images": len(scores), "logit_mean": float(scores.mean()),
                "logit_std": float(scores.std()) if len(scores) > 1 else 0.0, "rank_mean": float(rank.mean()),
                "top1": float((rank <= 1).double().mean()), f"top{k}": float((rank <= k).double().mean())}


class AblateUnits:
    """Forward hooks that replace ``{layer: [unit, ...]}`` by ``values`` (``{layer: (K,) tensor}``, in the order
    of the units; 0 where a layer has none) while ``active`` is true; a context manager."""

    def __init__(self, model: nn.Module, units: dict[str, list[int]],
                 values: dict[str, torch.Tensor] | None = None):
        if not units or not any(units.values()):
            raise AuditError("no unit to ablate: give at least one layer:unit")
        infos = {i.name: i for i in enumerate_units(model, include=list(units), skip_first_last=False)}
        self.active = False
        self.replace = {name: self._replacement(name, infos[name].channel_dim, list(idx), torch.as_tensor(
            (values or {}).get(name, torch.zeros(len(idx))), dtype=torch.float32))
            for name, idx in units.items() if idx}  # every layer is checked before any hook is registered
        self.hooks = ForwardHooks(model, self.replace, lambda name, output: self.replace[name](output))

    def _replacement(self, name: str, declared: int, units: list[int], values: torch.Tensor):
        if values.shape != (len(units),):
            raise AuditError(f"layer {name}: {len(units)} units to ablate but {tuple(values.shape)} values")

        def ablated(output):
            if not self.active:
                return None
            if not torch.is_tensor(output):
                raise AuditError(f"layer {name} returns a {type(output).__name__}, not a tensor; its units cannot "
                                 "be ablated")
            dim = channel_dim_of(output, declared) % output.ndim
            width = output.shape[dim]
            bad = [u for u in units if not 0 <= u < width]
            if bad:
                raise AuditError(f"unit(s) {bad} of layer {name} are out of range: it has {width} units")
            shape = [1] * output.ndim
            shape[dim] = len(units)
            size = list(output.shape)
            size[dim] = len(units)
            source = values.to(output).view(shape).expand(size)
            return output.index_copy(dim, torch.tensor(units, device=output.device), source)

        return ablated

    def __enter__(self) -> "AblateUnits":
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.remove()


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim != 2:
        raise AuditError(f"the model returns outputs of shape {tuple(out.shape)}, not (batch, classes) logits")
    return out.float().cpu()


def model_logits(loaded, images, options: AuditTestOptions, ablate: dict[str, list[int]] | None = None,
                 values: dict[str, torch.Tensor] | None = None, progress: bool = True, what: str = "images") -> Logits:
    """Logits of ``loaded`` (a ``LoadedModel``) on ``images`` (a folder, a .txt/.csv file list, or an
    ``ImageDataset``), run as ``options`` say (batch size, device, channels-last); with ``ablate``, also with those
    units set to ``values`` (default 0). Unreadable images are skipped and named."""
    from torch.utils.data import DataLoader

    from unitlens.data.datasets import ImageDataset, collate_readable, load_dataset

    data = images.with_transform(loaded.transform) if isinstance(images, ImageDataset) else \
        load_dataset(images, loaded.transform)
    device = pick_device(options.device)
    net = prepare_model(loaded.model, device, options.channels_last)
    plain, ablated, ids, failed = [], [], [], []
    loader = DataLoader(data, batch_size=options.batch_size, shuffle=False, num_workers=0, collate_fn=collate_readable)
    hooks_or_none = AblateUnits(net, ablate, values) if ablate else nullcontext()
    with torch.no_grad(), Progress(what, len(data), progress, unit="img") as bar, hooks_or_none as hooks:
        for x, batch_ids, bad in loader:
            failed += [i for i, _ in bad]
            if x is not None:
                x = x.to(device)
                plain.append(_outputs(net, x))
                if hooks is not None:
                    hooks.active = True
                    try:
                        ablated.append(_outputs(net, x))
                    finally:
                        hooks.active = False
                ids.append(batch_ids)
            bar.advance(len(batch_ids) + len(bad))
    if not ids:
        raise AuditError(f"none of the {len(data)} images of {data.spec} could be read")
    ids_t = torch.cat(ids)
    labels = [str(data.samples["label"].iloc[int(i)]) for i in ids_t]
    return Logits(ids_t, labels, torch.cat(plain), torch.cat(ablated) if ablated else None,
                  [str(data.path(i)) for i in failed])
