"""``timm:<name>``: penultimate (pooled, pre-classifier) features of any timm model, with its eval transform.

Weights come from timm's own loading (Hugging Face hub for most models, else a torch.hub URL), looked up
in the cache first. ``<name>`` may carry a pretrained tag, e.g. ``timm:resnet50.a1_in1k``.
"""
from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from unitlens.backends.base import BACKENDS, Backend
from unitlens.backends.hub import display_name, unavailable
from unitlens.errors import BadInput
from unitlens.runtime import prepare_model, seeded
from unitlens.zoo.hub import hf_hub_cache, hub_mode, torch_checkpoints


class TimmBackend(Backend):
    def __init__(self, model_name: str, device=None, pretrained: bool = True, cache_dir=None):
        super().__init__(device)
        import timm
        import timm.data

        if not model_name:
            raise BadInput("the timm backend needs a model name, e.g. timm:resnet50 or timm:vit_small_patch14_dinov2")
        arch = model_name.split(".")[0]
        if not timm.is_model(arch):
            raise BadInput(f"timm has no architecture '{arch}' (see timm.list_models())")
        self.name = display_name(f"timm:{model_name}", pretrained)
        if pretrained:
            cfg = timm.models.get_pretrained_cfg(model_name)
            hf_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
            cache = cache_dir or (hf_hub_cache() if hf_id else torch_checkpoints())
            where = f"{cache} ({'Hugging Face repo ' + hf_id if hf_id else getattr(cfg, 'url', '') or 'no source'})"
            try:
                with hub_mode():
                    model = timm.create_model(model_name, pretrained=True, num_classes=0, cache_dir=cache)
            except Exception as err:  # hub and URL errors come in many types
                raise unavailable(
                    self.name, where,
                    "run the same command once on a machine with network access to fill that cache "
                    "(copy HF_HOME or TORCH_HOME over), or set HF_HOME/TORCH_HOME to a cache that has them.",
                    err,
                    hub=bool(hf_id),
                ) from err
        else:
            with seeded():
                model = timm.create_model(model_name, pretrained=False, num_classes=0)
        self.model: Any = prepare_model(model, self.device)  # channels-last: faster convs on CPU
        self.data_config = timm.data.resolve_model_data_config(model)
        self.transform = timm.data.create_transform(**self.data_config, is_training=False)
        self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)  # type: ignore[arg-type]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self._finish(self.model(batch.to(self.device, memory_format=torch.channels_last)))


@BACKENDS.register("timm")
def _load_timm(spec: str, device=None, pretrained: bool = True, cache_dir=None) -> TimmBackend:
    return TimmBackend(spec, device=device, pretrained=pretrained, cache_dir=cache_dir)
