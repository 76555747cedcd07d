"""``composite_for(model)``: the paper's LRP composite (ε z⁺ ♭, zennit ``EpsilonPlusFlat``) with the canonizers the
architecture needs, or ``RelevanceUnavailable`` where LRP has no rules for it.

EpsilonPlusFlat uses the flat rule for the first linear/conv layer, z⁺ for every other convolution, ε for fully
connected layers, the Norm rule for average pooling and ``Sum`` (residual additions) and passes relevance through
activations unchanged. The pass rule matters for ReLU6 nets (EfficientNet-Lite, MobileNet): a saturated ReLU6 has
zero gradient, so relevance reaching it would otherwise vanish. timm's own activation classes are added to the pass
rule as well.

Canonizers (all applied to every model; each touches only the modules it recognises): batch norms merged into the
preceding conv (exactly), residual additions of timm/torchvision blocks through ``Sum`` (``canonizers.py``),
torchvision ResNet basic/bottleneck blocks through zennit's own canonizers, squeeze-excitation gates passed through.

Attention / token models (ViTs, Swin, ...) and layer/group norms have no LRP rule here: ``RelevanceUnavailable``;
relevance crops then fall back to activation-map crops, as the paper does for ViTs.
"""
from __future__ import annotations

from torch import nn
from zennit.composites import EpsilonPlusFlat
from zennit.core import Composite
from zennit.rules import Pass
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

from unitlens.errors import RelevanceUnavailable
from unitlens.relevance.canonizers import (
    ExactMergeBatchNorm,
    GatePassCanonizer,
    SkipSumCanonizer,
)

COMPOSITE_NAME = "epsilon_plus_flat"  # the paper's ε z⁺ ♭ composite (supplementary H.2)


def unavailable_reason(model: nn.Module) -> str | None:
    """Why LRP relevance cannot be computed for ``model`` (None when it can)."""
    if getattr(model, "cls_token", None) is not None or hasattr(model, "patch_embed"):
        return "it is a token (transformer) model"
    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, nn.MultiheadAttention) or "Attention" in kind:
            return f"it contains attention ({name}: {kind})"
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or kind.startswith("LayerNorm"):
            return f"it contains {kind} ({name}), which has no LRP rule here"
    return None


def check_supported(model: nn.Module, name: str = "the model") -> None:
    """Raise ``RelevanceUnavailable`` (with the reason and the fallback) when LRP cannot explain ``model``."""
    reason = unavailable_reason(model)
    if reason:
        raise RelevanceUnavailable(
            f"CRP relevance is not available for {name}: {reason}. LRP rules exist here for conv nets (VGG, ResNet, "
            "EfficientNet/MobileNet-style); for this model use activation-map crops (--crop activation), as the "
            "SemanticLens paper does for ViTs")


def _timm_activations() -> tuple[type, ...]:
    try:
        from timm.layers import activations
    except ImportError:
        return ()
    return tuple(v for v in vars(activations).values()
                 if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == activations.__name__)


def composite_for(model: nn.Module, name: str = "the model") -> Composite:
    """The ε z⁺ ♭ composite with this project's canonizers for ``model`` (raises ``RelevanceUnavailable``)."""
    check_supported(model, name)
    canonizers = [ExactMergeBatchNorm(), SkipSumCanonizer(), ResNetBasicBlockCanonizer(),
                  ResNetBottleneckCanonizer(), GatePassCanonizer()]
    composite = EpsilonPlusFlat(canonizers=canonizers)
    extra = _timm_activations()
    if extra:
        composite.layer_map = [(extra, Pass())] + composite.layer_map
    return composite
