"""CRP passes on batches of images (zennit-crp ``CondAttribution`` with a zennit composite).

- ``target_relevance``: one backward per batch explains each sample's target logit and gives the relevance R_k of
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

import torch
from crp.attribution import CondAttribution
from torch import nn

from unitlens.runtime import ForwardHooks, first_tensor, stop_at
from unitlens.zoo.units import channel_dim_of


class OutputGradients:
    """Forward hooks that keep the outputs of named modules and their gradients (= relevances under zennit).

    With ``cut``, the first recorded layer to run hands a detached copy of its output on: the backward stops
    there, as nothing below the recorded layers is needed (the input heatmap is then zero).
    """

    def __init__(self, model: nn.Module, layers: list[str], cut: bool = False):
        self.cut = cut
        self.outputs: dict[str, torch.Tensor] = {}
        self.hooks = ForwardHooks(model, layers, self._keep)

    def _keep(self, name: str, output):
        if self.cut and not self.outputs and isinstance(output, torch.Tensor) and output.requires_grad:
            self.outputs[name] = output.detach().requires_grad_(True)
            return self.outputs[name]
        out = first_tensor(output)
        if out.requires_grad:
            out.retain_grad()
        self.outputs[name] = out
        return None

    def relevance(self, name: str) -> torch.Tensor:
        out = self.outputs[name]
        return out.grad if out.grad is not None else torch.zeros_like(out)

    def close(self) -> None:
        self.hooks.remove()


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
    if channel_dim_of(r, channel_dim) == 1:
        return r.flatten(2).sum(2)
    return r.flatten(1, -2).sum(1)


def target_relevance(attribution, composite, x: torch.Tensor, targets: torch.Tensor, layers: dict[str, int]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Explain logit ``targets[i]`` of sample ``i``: (logits (B, n_classes), {layer: R (B, C)}).

    ``layers`` maps layer names to their channel dim. One forward and one backward for the whole batch.
    """
    recorder = OutputGradients(attribution.model, list(layers), cut=True)
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
    recorder = OutputGradients(attribution.model, list(record), cut=True)
    try:
        data = x.detach().repeat_interleave(G, 0).requires_grad_(True)  # sample-major: (x0, g0), (x0, g1), ...
        conditions = [{layer: list(g), "y": [int(target)]} for g in groups] * B
        attribution(data, conditions, composite)
        return {name: unit_sums(recorder.relevance(name), cdim).view(B, G, -1) for name, cdim in record.items()}
    finally:
        recorder.close()


def unit_heatmaps(attribution, composite, x: torch.Tensor, layer: str, units: torch.Tensor, channel_dim: int = 1
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Input heatmaps (P, H, W) of unit ``units[p]`` on image ``x[p]``, and the activation they start from (P,).

    The relevance at ``layer`` is the unit's activation at its most activated position, zero elsewhere (CRP's
    receptive-field reference heatmap); the heatmap is the input relevance summed over colour channels.
    """
    start = {}

    def init(activation: torch.Tensor) -> torch.Tensor:
        moved = activation.ndim > 2 and channel_dim_of(activation, channel_dim) != 1
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
    with stop_at(attribution.model, layer):
        result = attribution(data, [{} for _ in range(len(data))], composite, start_layer=layer, init_rel=init,
                             exclude_parallel=False)
    return result.heatmap.detach(), start["value"]
