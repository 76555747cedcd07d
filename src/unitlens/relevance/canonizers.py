"""zennit canonizers that put conv nets into a form where LRP rules conserve relevance.

- ``ExactMergeBatchNorm``: folds every batch norm into the conv/linear layer right before it in module order, also
  when the batch norm is not a leaf (timm's ``BatchNormAct2d`` carries its activation as a child, which zennit's
  ``SequentialMergeBatchNorm`` cannot see past). The emptied batch norm is set to an exact identity
  (running_var = 1 − eps; zennit's merge leaves a 1/sqrt(1 + eps) factor, 0.05 % per layer at timm's eps 1e-3).
- ``SkipSumCanonizer``: residual blocks that add their input back (``x = drop_path(x) + shortcut`` in timm's
  ``has_skip`` blocks, ``x + block(x)`` in torchvision's ``use_res_connect`` blocks) route the addition through
  ``zennit.layer.Sum``, so the Norm rule splits relevance between branch and shortcut instead of handing the full
  amount to both (plain gradients duplicate it).
- ``GatePassCanonizer``: squeeze-excitation gates ``x * g(x)`` pass all relevance to ``x`` (the gate is treated as
  a weight, the usual LRP convention for multiplicative gates); the gate branch gets none.

The block rewrites call the block's own forward with its skip flag switched off (or on a detached input), so no
library code is copied and any block that follows the flag convention is covered.
"""
from __future__ import annotations

import torch
from torch import nn
from zennit.canonizers import AttributeCanonizer, MergeBatchNorm
from zennit.layer import Sum
from zennit.types import BatchNorm, Linear

SKIP_FLAGS = ("has_skip", "use_res_connect")  # timm efficientnet/mobilenet blocks; torchvision mobilenet/efficientnet
GATE_CLASSES = ("SqueezeExcite", "SqueezeExcitation", "SEModule", "EffectiveSEModule")


class ExactMergeBatchNorm(MergeBatchNorm):
    """Merge each batch norm into the linear/conv module that precedes it in module-registration order."""

    def apply(self, root_module: nn.Module) -> list:
        instances = []
        last = None
        inside_bn: tuple[str, ...] = ()
        for name, module in root_module.named_modules():
            if inside_bn and name.startswith(inside_bn):
                continue  # the activation/dropout children of a BatchNormAct-style module
            if isinstance(module, BatchNorm):
                if isinstance(last, Linear) and _fits(last, module):
                    instance = self.copy()
                    instance.register((last,), module)
                    instances.append(instance)
                last = module
                inside_bn = (name + ".",)
                continue
            if not any(True for _ in module.children()):
                last = module
        return instances

    @staticmethod
    def merge_batch_norm(modules, batch_norm) -> None:
        MergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 1.0 - batch_norm.eps)


def _fits(linear: nn.Module, batch_norm: nn.Module) -> bool:
    out = getattr(linear, "out_channels", getattr(linear, "out_features", None))
    return (out == batch_norm.num_features and batch_norm.running_var is not None
            and getattr(batch_norm, "weight", None) is not None)


class SkipSumCanonizer(AttributeCanonizer):
    """Route the residual addition of ``has_skip`` / ``use_res_connect`` blocks through ``zennit.layer.Sum``."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        flag = next((f for f in SKIP_FLAGS if getattr(module, f, None) is True), None)
        if flag is None:
            return None
        return {"forward": cls._forward(module, flag), "canonizer_sum": Sum()}

    @staticmethod
    def _forward(module: nn.Module, flag: str):
        block_forward = type(module).forward
        drop = getattr(module, "drop_path", None) or getattr(module, "stochastic_depth", None)

        def forward(x):
            setattr(module, flag, False)
            try:
                branch = block_forward(module, x)
            finally:
                setattr(module, flag, True)
            if drop is not None:
                branch = drop(branch)
            return module.canonizer_sum(torch.stack([branch, x], dim=-1))

        return forward

    def copy(self):
        return SkipSumCanonizer()


class GatePassCanonizer(AttributeCanonizer):
    """Squeeze-excitation modules: same output, but relevance (gradient) passes to the input unchanged."""

    def __init__(self):
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if type(module).__name__ not in GATE_CLASSES:
            return None
        block_forward = type(module).forward

        def forward(x):
            gated = block_forward(module, x.detach())
            return x + (gated - x).detach()

        return {"forward": forward}

    def copy(self):
        return GatePassCanonizer()
