"""CRP passes on batches of images (zennit-crp ``CondAttribution`` with a zennit composite).

- ``class_relevance``: one backward per batch explains each sample's target logit and gives the relevance R_k of
  every unit of every requested layer (relevance at the layer output, summed over space) — all units of all layers
  from the same pass.
- ``group_relevance``: relevance at lower layers that flows through groups of units of an upper layer (the edges
  of an attribution graph), every (sample, group) pair a batch element.
- ``unit_heatmaps``: input heatmaps of single units, one (unit, image) pair per batch element, the backward
  starting at the unit's layer with the relevance initialised to the unit's activation at its most activated
  position (the neuron-specific heatmap the paper crops with, supplementary H.1); the forward pass stops at that
  layer.

Layer outputs are recorded with our own hooks rather than CRP's ``record_layer``: CRP clears the gradient of each
recorded tensor after reading it, so two layers that return the same tensor (a block and its last module) would
read zeros.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from crp.attribution import CondAttribution
from torch import nn

from unitlens.relevance.errors import RelevanceError


def pick_device(device=None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on ``device`` in eval mode, channels-last (faster depthwise convs on CPU and GPU; same numbers)."""
    return model.to(device, memory_format=torch.channels_last).eval()


class _Recorder:
    """Forward hooks that keep the outputs of named modules and their gradients (= relevances under zennit).

    With ``cut``, the first recorded layer to run hands a detached copy of its output on: the backward stops
    there, as nothing below the recorded layers is needed (the input heatmap is then zero).
    """

    def __init__(self, model: nn.Module, layers: list[str], cut: bool = False):
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise RelevanceError(f"layer(s) {missing} are not modules of the model")
        self.cut = cut
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[name].register_forward_hook(self._hook(name)) for name in layers]

    def _hook(self, name):
        def hook(_module, _inputs, output):
            if self.cut and not self.outputs and isinstance(output, torch.Tensor) and output.requires_grad:
                self.outputs[name] = output.detach().requires_grad_(True)
                return self.outputs[name]
            out = output[0] if isinstance(output, (tuple, list)) else output
            if out.requires_grad:
                out.retain_grad()
            self.outputs[name] = out
            return None
        return hook

    def relevance(self, name: str) -> torch.Tensor:
        out = self.outputs[name]
        return out.grad if out.grad is not None else torch.zeros_like(out)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class Attribution(CondAttribution):
    """zennit-crp's ``CondAttribution``; the input heatmap is zero when the backward was cut above the input."""

    def heatmap_modifier(self, data, on_device=None):
        if data.grad is None:
            heat = torch.zeros(data.shape[0], *data.shape[2:], dtype=data.dtype, device=data.device)
            return heat.to(on_device) if on_device else heat
        return super().heatmap_modifier(data, on_device)


def unit_sums(relevance: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """(B, C, ...) or (B, ..., C) relevance -> (B, C) per-unit totals (float64, so layer sums are exact)."""
    r = relevance.double()
    if r.ndim == 2:
        return r
    if channel_dim in (0, 1):
        return r.flatten(2).sum(2)
    return r.flatten(1, -2).sum(1)


def class_relevance(attribution, composite, x: torch.Tensor, targets: torch.Tensor, layers: dict[str, int]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Explain logit ``targets[i]`` of sample ``i``: (logits (B, n_classes), {layer: R (B, C)}).

    ``layers`` maps layer names to their channel dim. One forward and one backward for the whole batch.
    """
    recorder = _Recorder(attribution.model, list(layers), cut=True)
    try:
        data = x.detach().clone().requires_grad_(True)
        conditions = [{"y": [int(t)]} for t in targets.tolist()]
        result = attribution(data, conditions, composite)
        rel = {name: unit_sums(recorder.relevance(name), cdim) for name, cdim in layers.items()}
    finally:
        recorder.close()
    return result.prediction.detach(), rel


def group_relevance(attribution, composite, x: torch.Tensor, target: int, layer: str, groups: list[list[int]],
                    record: dict[str, int]) -> dict[str, torch.Tensor]:
    """Relevance for class ``target`` at the ``record`` layers that flows through unit group ``g`` of ``layer``:
    {name: (B, G, C)} for every (sample, group) pair, all in one backward (CRP conditions
    ``{layer: g, "y": [target]}``; CRP's default keeps relevance out of paths that bypass ``layer``)."""
    B, G = x.shape[0], len(groups)
    recorder = _Recorder(attribution.model, list(record), cut=True)
    try:
        data = x.detach().repeat_interleave(G, 0).requires_grad_(True)  # sample-major: (x0, g0), (x0, g1), ...
        conditions = [{layer: list(g), "y": [int(target)]} for g in groups] * B
        attribution(data, conditions, composite)
        return {name: unit_sums(recorder.relevance(name), cdim).view(B, G, -1) for name, cdim in record.items()}
    finally:
        recorder.close()


class _Stop(Exception):
    """Ends a forward pass after the layer a backward starts from."""


@contextlib.contextmanager
def forward_until(model: nn.Module, layer: str):
    """Within the block, calling ``model`` runs its forward only up to ``layer`` (returns that layer's output).

    The stop hook is registered at call time, so it runs after every hook zennit and CRP put on that layer.
    """
    module = dict(model.named_modules())[layer]

    def forward(*args, **kwargs):
        captured = {}

        def stop(_module, _inputs, output):
            captured["out"] = output
            raise _Stop

        handle = module.register_forward_hook(stop)
        try:
            type(model).forward(model, *args, **kwargs)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured.get("out")

    model.forward = forward
    try:
        yield model
    finally:
        del model.forward


def unit_heatmaps(attribution, composite, x: torch.Tensor, layer: str, units: torch.Tensor, channel_dim: int = 1
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Input heatmaps (P, H, W) of unit ``units[p]`` on image ``x[p]``, and the activation they start from (P,).

    The relevance at ``layer`` is the unit's activation at its most activated position, zero elsewhere (CRP's
    receptive-field reference heatmap); the heatmap is the input relevance summed over colour channels.
    """
    start = {}

    def init(activation: torch.Tensor) -> torch.Tensor:
        moved = activation.ndim > 2 and channel_dim not in (0, 1)
        a = activation.movedim(-1, 1) if moved else activation
        rows, cols = torch.arange(a.shape[0], device=a.device), units.to(a.device)
        maps = a[rows, cols].reshape(a.shape[0], -1)  # (P, positions)
        value, pos = maps.max(1)
        full = torch.zeros(a.shape[0], a.shape[1], maps.shape[1], dtype=a.dtype, device=a.device)
        full[rows, cols, pos] = value
        start["value"] = value.detach()
        full = full.view(a.shape)
        return full.movedim(1, -1) if moved else full

    data = x.detach().clone().requires_grad_(True)
    with forward_until(attribution.model, layer):
        result = attribution(data, [{} for _ in range(len(data))], composite, start_layer=layer, init_rel=init,
                             exclude_parallel=False)
    return result.heatmap.detach(), start["value"]


def image_batches(dataset, ids: list[int], transform, batch_size: int, device: torch.device, skipped=None
                  ) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[int, int]]]]:
    """(ids, model inputs on ``device``, original (width, height) per image) in chunks, the next chunk loaded
    ahead. Unreadable images are left out of their chunk and reported to ``skipped(id, path, error)``."""

    def load(sample_id: int):
        try:
            image = dataset.image(sample_id)
            return transform(image), image.size
        except Exception as err:  # corrupt or unreadable file: reported, not fatal
            return err

    chunks = [ids[s:s + batch_size] for s in range(0, len(ids), batch_size)]
    if not chunks:
        return
    with ThreadPoolExecutor(max(1, min(4, torch.get_num_threads()))) as pool:
        ahead = [pool.submit(load, int(i)) for i in chunks[0]]
        for c, chunk in enumerate(chunks):
            loaded = [f.result() for f in ahead]
            ahead = [pool.submit(load, int(i)) for i in chunks[c + 1]] if c + 1 < len(chunks) else []
            good = [(i, item) for i, item in zip(chunk, loaded) if not isinstance(item, Exception)]
            for i, item in zip(chunk, loaded):
                if isinstance(item, Exception) and skipped is not None:
                    skipped(int(i), dataset.path(int(i)), item)
            if not good:
                continue
            x = torch.stack([t for _, (t, _) in good]).to(device)
            if x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield [int(i) for i, _ in good], x, [size for _, (_, size) in good]
